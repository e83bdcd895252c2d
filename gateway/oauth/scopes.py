"""Scope maths (PROTOCOL A5, T5): parse, intersect with what a client may have, narrow."""

from __future__ import annotations

from gateway.errors import InvalidScope
from gateway.models import SUPPORTED_SCOPES

# Grantable in a delegated grant only when the client's registration holds it; open
# registration never does (see registration.py).
REGISTERED_ONLY = frozenset({"admin"})


def parse_scope(value: str | None) -> frozenset[str]:
    """The scopes in a space-separated string; unknown scope → InvalidScope."""
    scopes = frozenset((value or "").split())
    unknown = scopes - set(SUPPORTED_SCOPES)
    if unknown:
        raise InvalidScope(f"unknown scope: {' '.join(sorted(unknown))}")
    return scopes


def grant_scopes(requested: str | None, allowed: frozenset[str]) -> frozenset[str]:
    """Requested ∩ allowed; no scope requested → everything the client may have."""
    wanted = parse_scope(requested)
    granted = (wanted & allowed) if wanted else allowed
    if not granted:
        raise InvalidScope("none of the requested scopes is allowed for this client")
    return granted


def consented_scopes(requested: str | None, registered: frozenset[str]) -> frozenset[str]:
    """Scopes of a delegated grant (authorization code): what the user consents to.

    The registration does not cap them: MCP clients register with the scope of the
    first challenge and ask for more on a 403 insufficient_scope (step-up, PROTOCOL D6),
    so capping by the registered scope would make step-up impossible. `admin` is the
    exception: only when registered (A5). Unknown scopes are still refused; no scope
    requested → the registered scope.
    """
    granted = (parse_scope(requested) or registered) - (REGISTERED_ONLY - registered)
    if not granted:
        raise InvalidScope("none of the requested scopes may be granted to this client")
    return granted


def narrow_scopes(requested: str | None, original: frozenset[str]) -> frozenset[str]:
    """A refresh may keep or narrow the original grant, never widen it (RFC 6749 §6)."""
    wanted = parse_scope(requested)
    if not wanted:
        return original
    if not wanted <= original:
        raise InvalidScope("a refresh cannot widen the original scope")
    return wanted


def format_scope(scopes: frozenset[str]) -> str:
    """Space-separated, in the canonical order of SUPPORTED_SCOPES."""
    return " ".join(s for s in SUPPORTED_SCOPES if s in scopes)
