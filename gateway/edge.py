"""Per-connection budgets at the edge: what one TCP peer may cost in bytes and time.

`EdgeLimits` holds the settings (README, "Connection limits"); `ConnectionLimiter` counts
open connections per client address and in total, so a flood from one address (or from
many) is refused with 503 instead of exhausting file descriptors. Addresses are counted
as the rate limits count them (the `key` given: gateway.ratelimit.limit_key, IPv4 per
address, IPv6 per /64). The server protocol (gateway.http_protocol) enforces the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class EdgeLimits:
    # The whole request head (request line + headers) within this many seconds of its
    # first byte; a new connection that sends nothing is closed after it too.
    head_timeout: float = 10.0
    # A request body that stops arriving for this long is closed with 408 ...
    body_idle_timeout: float = 10.0
    # ... and one still arriving after this long as well (a trickle of a byte a second).
    body_timeout: float = 30.0
    # A response the client does not read (writes paused) for this long is aborted.
    send_timeout: float = 30.0
    # An idle keep-alive connection between requests is closed after this long.
    keepalive_timeout: float = 75.0
    # Request line + headers, and separately chunk framing + trailers of one body.
    max_head_bytes: int = 64 * 1024
    # Requests read ahead of the one being answered; reading stops past this.
    max_pipelined: int = 8
    max_connections: int = 4096
    max_connections_per_address: int = 256


class ConnectionLimiter:
    """Open connections per address key and in total (one server process)."""

    def __init__(
        self, per_address: int, total: int, key: Callable[[str], str | None] = lambda a: a
    ) -> None:
        self.per_address = per_address
        self.total = total
        # address -> counter key (gateway.ratelimit.limit_key), or None for an address
        # counted in the total only (a trusted reverse proxy carries everyone's traffic)
        self.key = key
        self.open = 0
        self._by_key: dict[str, int] = {}

    def admit(self, key: str | None) -> bool:
        """Count a new connection from `key`; False (and nothing counted) when over a cap."""
        if self.open >= self.total:
            return False
        if key is not None:
            held = self._by_key.get(key, 0)
            if held >= self.per_address:
                return False
            self._by_key[key] = held + 1
        self.open += 1
        return True

    def release(self, key: str | None) -> None:
        if key is None:
            self.open -= 1
            return
        held = self._by_key.get(key, 0)
        if held <= 0:
            return
        self.open -= 1
        if held == 1:
            del self._by_key[key]
        else:
            self._by_key[key] = held - 1
