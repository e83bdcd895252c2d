"""PROTOCOL P4: upstream failures as JSON, in the same shape as the OAuth errors.

OAuthError
├── BadGateway          502  upstream refused, reset, or sent something unparseable
│   └── StaleConnection      a pooled connection was closed before any response byte
└── GatewayTimeout      504  upstream too slow to accept, answer or continue
"""

from __future__ import annotations

from gateway.errors import OAuthError


class BadGateway(OAuthError):
    error = "bad_gateway"
    status_code = 502


class StaleConnection(BadGateway):
    """Safe to retry on a fresh connection: the upstream sent nothing at all."""


class GatewayTimeout(OAuthError):
    error = "gateway_timeout"
    status_code = 504


class ClientGone(Exception):
    """The client disconnected; the exchange is abandoned without a response."""
