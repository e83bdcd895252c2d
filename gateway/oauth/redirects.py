"""Redirect URI rules: registration (PROTOCOL R3) and matching (A2, RFC 8252 §7.3)."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import SplitResult, urlsplit

from gateway.errors import InvalidRedirectUri

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
DANGEROUS_SCHEMES = frozenset(
    {"javascript", "data", "file", "vbscript", "about", "blob", "filesystem", "ftp", "ws", "wss"}
)


def validate_redirect_uri(uri: str, allowed_schemes: Iterable[str] = ()) -> str:
    """The URI unchanged when it may be registered; InvalidRedirectUri otherwise."""
    parts = _split(uri)
    scheme = parts.scheme.lower()
    if "#" in uri:
        raise InvalidRedirectUri(f"redirect URI must not have a fragment: {uri}")
    if scheme == "https":
        if not parts.hostname:
            raise InvalidRedirectUri(f"redirect URI has no host: {uri}")
        return uri
    if scheme == "http":
        if (parts.hostname or "").lower() not in LOOPBACK_HOSTS:
            raise InvalidRedirectUri(f"http redirect URIs must be loopback: {uri}")
        return uri
    if scheme in DANGEROUS_SCHEMES or scheme not in set(allowed_schemes):
        raise InvalidRedirectUri(f"redirect URI scheme {scheme!r} is not allowed")
    return uri


def is_loopback(uri: str) -> bool:
    parts = _split_or_none(uri)
    return parts is not None and parts.scheme == "http" and _host(parts) in LOOPBACK_HOSTS


def redirect_matches(registered: str, presented: str) -> bool:
    """Exact match, except that a loopback URI matches on any port (RFC 8252 §7.3)."""
    if registered == presented:
        return True
    if not (is_loopback(registered) and is_loopback(presented)):
        return False
    a, b = urlsplit(registered), urlsplit(presented)
    return (a.scheme, _host(a), a.path, a.query) == (b.scheme, _host(b), b.path, b.query) and (
        "#" not in presented
    )


def find_redirect(registered: Iterable[str], presented: str) -> str | None:
    return next((r for r in registered if redirect_matches(r, presented)), None)


def redirect_host(uri: str) -> str:
    parts = _split_or_none(uri)
    if parts is None:
        return uri
    return parts.netloc or f"{parts.scheme}:"


def _host(parts: SplitResult) -> str:
    return (parts.hostname or "").lower()


def _split(uri: str) -> SplitResult:
    parts = _split_or_none(uri)
    if parts is None or not parts.scheme:
        raise InvalidRedirectUri(f"redirect URI is not an absolute URI: {uri!r}")
    return parts


def _split_or_none(uri: str) -> SplitResult | None:
    if not isinstance(uri, str) or any(c.isspace() for c in uri):
        return None
    try:
        parts = urlsplit(uri)
        _ = parts.port
    except ValueError:
        return None
    return parts
