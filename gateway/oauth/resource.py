"""Resource indicators (RFC 8707, PROTOCOL A4): canonical comparison with this resource."""

from __future__ import annotations

from urllib.parse import urlsplit

from gateway.errors import InvalidTarget


def canonical_resource(value: str) -> str | None:
    """Lower-case scheme and host, default port dropped, trailing slash dropped."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in {"http", "https"} or not parts.hostname or parts.fragment:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = 443 if scheme == "https" else 80
    origin = f"{scheme}://{host}" if port in (None, default) else f"{scheme}://{host}:{port}"
    path = parts.path.rstrip("/")
    query = f"?{parts.query}" if parts.query else ""
    return f"{origin}{path}{query}"


def resolve_resource(requested: list[str], resource: str, *, issuer: str | None = None) -> str:
    """The audience for a token: `resource` when absent or naming it, else InvalidTarget.

    The gateway protects one resource, so `issuer` (what the root protected resource
    metadata declares, RFC 9728 §3.3) names the same audience as `{issuer}/mcp`.
    """
    if not requested:
        return resource
    accepted = {canonical_resource(resource)}
    if issuer is not None:
        accepted.add(canonical_resource(issuer))
    for value in requested:
        if canonical_resource(value) not in accepted:
            raise InvalidTarget(f"unknown resource: {value[:200]!r}")
    return resource
