"""Which browser origins may call the proxied routes (DNS-rebinding protection).

The MCP Streamable HTTP transport says a server MUST validate `Origin` and answer 403
when it is present and not allowed. A request is allowed when it has no `Origin` (not
a browser, or a same-origin GET), when its origin is the issuer's, when the issuer is
loopback (development) and the origin is loopback too, or when the origin is listed in
MCP_GATEWAY_ALLOWED_ORIGINS. CORS answers (gateway.cors) name the same origins.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost"})
_CACHE_SIZE = 256


def normalise_origin(value: str) -> str | None:
    """`scheme://host[:port]` lower-cased without a default port, or None when `value`
    is not an http(s) origin (RFC 6454 serialisation; "null" is not one)."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if parts.scheme not in {"http", "https"} or not host or parts.path or parts.query:
        return None
    if ":" in host:
        host = f"[{host}]"
    default = 443 if parts.scheme == "https" else 80
    origin = f"{parts.scheme}://{host}"
    return origin if port in (None, default) else f"{origin}:{port}"


def is_loopback_origin(origin: str) -> bool:
    host = (urlsplit(origin).hostname or "").lower()
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OriginPolicy:
    """Decides `Origin` values; decisions are cached (a few origins recur)."""

    def __init__(self, issuer: str, allowed: tuple[str, ...], *, loopback_dev: bool) -> None:
        self.issuer = issuer
        self.allowed = frozenset(allowed)
        self.loopback_dev = loopback_dev
        self._seen: dict[bytes, bool] = {}

    def allows(self, origin: bytes | None) -> bool:
        if origin is None:
            return True
        decided = self._seen.get(origin)
        if decided is None:
            decided = self._decide(origin)
            if len(self._seen) >= _CACHE_SIZE:
                self._seen.pop(next(iter(self._seen)))
            self._seen[origin] = decided
        return decided

    def _decide(self, raw: bytes) -> bool:
        try:
            origin = normalise_origin(raw.decode("ascii"))
        except UnicodeDecodeError:
            return False
        if origin is None:
            return False
        if origin == self.issuer or origin in self.allowed:
            return True
        return self.loopback_dev and is_loopback_origin(origin)
