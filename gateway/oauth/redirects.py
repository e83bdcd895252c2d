"""Redirect URI rules: registration (PROTOCOL R3) and matching (A2, RFC 8252 §7.3)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import SplitResult, urlsplit

from gateway.errors import InvalidRedirectUri

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
DANGEROUS_SCHEMES = frozenset(
    {"javascript", "data", "file", "vbscript", "about", "blob", "filesystem", "ftp", "ws", "wss"}
)
# What a CSP source expression may carry of a host: a DNS name or an IP literal.
_CSP_HOST = re.compile(r"[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]")
_CSP_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


def validate_redirect_uri(uri: str, allowed_schemes: Iterable[str] = ()) -> str:
    """The URI unchanged when it may be registered; InvalidRedirectUri otherwise."""
    problem = _ambiguity(uri)
    if problem:
        raise InvalidRedirectUri(f"redirect URI {problem}: {uri!r}")
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
    """Exact match, except that a loopback URI matches on any port (RFC 8252 §7.3).

    A URI that parsers may read differently (backslash, userinfo, non-ASCII) never
    matches, even one registered before such URIs were refused.
    """
    if _ambiguity(presented) or _ambiguity(registered):
        return False
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


def redirect_origin(uri: str) -> str | None:
    """The CSP source a browser must be allowed to go to for this redirect URI.

    `scheme://host[:port]` exactly as registered or presented (a loopback URI's port is
    the one of the pending request), or `scheme:` for a private-use scheme; None when
    the URI cannot be expressed safely as a source.
    """
    parts = _split_or_none(uri)
    if parts is None or _ambiguity(uri) or not _CSP_SCHEME.fullmatch(parts.scheme):
        return None
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"}:
        return f"{scheme}:"
    host = parts.netloc.rpartition(":")[0] if parts.port is not None else parts.netloc
    if not _CSP_HOST.fullmatch(host):
        return None
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{scheme}://{host.lower()}{port}"


def redirect_host(uri: str) -> str:
    parts = _split_or_none(uri)
    if parts is None:
        return uri
    return parts.netloc or f"{parts.scheme}:"


def _ambiguity(uri: str) -> str | None:
    """Why browsers and URL parsers could disagree on where this URI goes, if they could.

    `http://evil.example\\@localhost/cb` is localhost to urlsplit but evil.example to a
    WHATWG parser; userinfo and non-ASCII (IDN, confusables) invite the same games.
    """
    if not isinstance(uri, str):
        return "is not a string"
    if any(not (0x21 <= ord(c) <= 0x7E) for c in uri):
        return "must be printable ASCII without spaces"
    if "\\" in uri:
        return "must not contain a backslash"
    _, sep, rest = uri.partition("://")
    if sep and "@" in rest.split("/", 1)[0].split("?", 1)[0]:
        return "must not contain userinfo"
    return None


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
