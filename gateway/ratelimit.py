"""Fixed-window rate limits per client address for the OAuth endpoints (PROTOCOL R5).

Counters live in the store, so replicas sharing a store share the limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.errors import TooManyRequests
from gateway.store.base import CounterStore

WINDOW_SECONDS = 60


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
        count = await self.counters.increment(f"{bucket}:{address}:{window}", window_end)
        if count > self.per_minute:
            raise TooManyRequests(int(window_end - now) + 1)
