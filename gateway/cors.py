"""CORS for browser MCP clients (PROTOCOL P5).

Credentials travel in the `Authorization` header, never in cookies (no
`Allow-Credentials`). Which origins may call the proxied routes is decided once, by
gateway.origins.OriginPolicy (the issuer's, loopback in development,
MCP_GATEWAY_ALLOWED_ORIGINS); a request from any other origin gets 403 before it gets
here, so these answers name the request's own (allowed) origin, with `Vary: Origin`.
A preflight never needs authentication and is answered before the policy runs; other
responses to a request with an `Origin` expose the headers an MCP client must read.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.errors import Header, RawResponse

ALLOW_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
ALLOW_HEADERS = (
    "Authorization",
    "Content-Type",
    "Accept",
    "MCP-Protocol-Version",
    "Mcp-Session-Id",
    "Last-Event-ID",
    "X-API-Key",
)
EXPOSE_HEADERS = ("WWW-Authenticate", "Mcp-Session-Id", "MCP-Protocol-Version")
MAX_AGE_SECONDS = 7200  # the longest a mainstream browser honours

_VARY = (b"vary", b"Origin")
_PREFLIGHT: tuple[tuple[bytes, bytes], ...] = (
    _VARY,
    (b"access-control-allow-methods", ", ".join(ALLOW_METHODS).encode()),
    (b"access-control-allow-headers", ", ".join(ALLOW_HEADERS).encode()),
    (b"access-control-max-age", str(MAX_AGE_SECONDS).encode()),
)
_ACTUAL: tuple[tuple[bytes, bytes], ...] = (
    _VARY,
    (b"access-control-expose-headers", ", ".join(EXPOSE_HEADERS).encode()),
)


def is_preflight(method: str, headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """An OPTIONS request with both `Origin` and `Access-Control-Request-Method`."""
    if method != "OPTIONS":
        return False
    origin = requested = False
    for name, _ in headers:
        lowered = name.lower()
        if lowered == b"origin":
            origin = True
        elif lowered == b"access-control-request-method":
            requested = True
    return origin and requested


def preflight_response(origin: bytes) -> RawResponse:
    """204 granting `origin` (already allowed) every method and header a browser MCP
    client needs."""
    headers = [(b"access-control-allow-origin", origin), *_PREFLIGHT]
    return RawResponse(status=204, headers=headers, body=b"")


def response_headers(origin: bytes | None) -> list[Header]:
    """Headers to add to any other response; none when the request had no `Origin`."""
    return [(b"access-control-allow-origin", origin), *_ACTUAL] if origin else []
