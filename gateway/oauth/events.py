"""Token events for operations: told of every token issued, refreshed or revoked."""

from __future__ import annotations

from collections.abc import Callable

# (event, grant): ("issued" | "refreshed" | "revoked", "authorization_code" | ...)
TokenEvents = Callable[[str, str], None]


def no_events(event: str, grant: str) -> None:
    """The token-event callback when nobody listens (no metrics)."""
