"""Fixed-window rate limits per client address for the OAuth endpoints (PROTOCOL R5).

Counters live in the store, so replicas sharing a store share the limit. The address
is the socket peer, or, when the peer is a configured trusted proxy (P6), the nearest
untrusted address of its `X-Forwarded-For`. IPv6 addresses count per /64: one host
usually holds a whole /64, so counting single addresses would not limit it at all.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable

from gateway.errors import TooManyRequests
from gateway.net import Network, is_trusted
from gateway.store.base import CounterStore

WINDOW_SECONDS = 60
IPV6_GROUP_PREFIX = 64


def client_address(peer: str, forwarded_for: Iterable[str], trusted: tuple[Network, ...]) -> str:
    """The address a request is counted against (see module doc)."""
    if not is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    for hop in reversed([h for h in hops if h]):
        if not is_trusted(hop, trusted):
            return hop
    return peer


def limit_key(address: str) -> str:
    """The counter key of an address: itself for IPv4, its /64 for IPv6."""
    try:
        parsed = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return address[:64]
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        network = ipaddress.IPv6Network((parsed, IPV6_GROUP_PREFIX), strict=False)
        return str(network)
    return str(parsed)


class RateLimiter:
    def __init__(
        self,
        counters: CounterStore,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.counters = counters
        self.per_minute = per_minute
        self.clock = clock

    async def check(self, bucket: str, address: str) -> None:
        """Count one request; TooManyRequests (429 + Retry-After) past the limit."""
        if self.per_minute <= 0:
            return
        now = self.clock()
        window = int(now // WINDOW_SECONDS)
        window_end = (window + 1) * WINDOW_SECONDS
        key = limit_key(address)
        count = await self.counters.increment(f"{bucket}:{key}:{window}", window_end)
        if count > self.per_minute:
            raise TooManyRequests(int(window_end - now) + 1)


class FailureCounter:
    """Failed credentials per address, in memory, on the proxy (guessing MCP_API_KEY or
    tokens): past `per_minute` failures in a window, the address gets 429 until it ends.

    Kept per process: it needs no I/O on the hot path, and a guesser spread over
    replicas is still slowed by each. Bounded: the oldest addresses are forgotten first.
    """

    def __init__(
        self,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        capacity: int = 10_000,
    ) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self.capacity = capacity
        self._windows: dict[str, tuple[int, int]] = {}

    @property
    def active(self) -> bool:
        """Whether any address has failed lately: the hot path checks nothing otherwise."""
        return bool(self._windows)

    def retry_after(self, key: str) -> int | None:
        """Seconds until `key` may try again, or None when it may now."""
        window, count = self._windows.get(key, (-1, 0))
        now = self.clock()
        if count <= self.per_minute or window != int(now // WINDOW_SECONDS):
            return None
        return int((window + 1) * WINDOW_SECONDS - now) + 1

    def record(self, key: str) -> None:
        if self.per_minute <= 0:
            return
        window = int(self.clock() // WINDOW_SECONDS)
        seen, count = self._windows.pop(key, (window, 0))
        self._windows[key] = (window, count + 1 if seen == window else 1)
        if len(self._windows) > self.capacity:
            self._windows.pop(next(iter(self._windows)))
        self._forget_old(window)

    def _forget_old(self, window: int) -> None:
        stale = [k for k, (w, _) in list(self._windows.items())[:8] if w < window]
        for key in stale:
            del self._windows[key]
