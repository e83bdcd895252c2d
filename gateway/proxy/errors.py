"""PROTOCOL P4: upstream failures as JSON, rendered like every other error.

GatewayError (gateway.errors)
├── ProxyError                   502 unless stated
│   ├── BadGateway          502  upstream refused, reset, or sent something unparseable
│   │   └── StaleConnection      a pooled connection was closed before any response byte
│   └── GatewayTimeout      504  upstream too slow to accept, answer or continue
└── InternalError
    └── ClientGone               the client left: no response at all
"""

from __future__ import annotations

from gateway.errors import GatewayError, InternalError


class ProxyError(GatewayError):
    error = "bad_gateway"
    status_code = 502


class BadGateway(ProxyError):
    error = "bad_gateway"
    status_code = 502


class StaleConnection(BadGateway):
    """Safe to retry on a fresh connection: the upstream sent nothing at all."""


class GatewayTimeout(ProxyError):
    error = "gateway_timeout"
    status_code = 504


class ClientGone(InternalError):
    """The client disconnected; the exchange is abandoned without a response."""
