"""The protected reverse proxy (PROTOCOL P1-P4, P6, D7, J3)."""

from gateway.proxy.app import ProxyApp
from gateway.proxy.errors import BadGateway, GatewayTimeout
from gateway.proxy.paths import InvalidPath, canonical_path

__all__ = ["BadGateway", "GatewayTimeout", "InvalidPath", "ProxyApp", "canonical_path"]
