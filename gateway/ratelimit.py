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
from gateway.proxy.headers import Network, is_trusted
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
