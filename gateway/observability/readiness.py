"""`/readyz`: ready when the OAuth store answers and the upstream accepts a connection.

`/healthz` stays liveness (the process serves requests). Readiness is what a load
balancer or orchestrator should route by: 503 with the reason while the store or the
upstream is down, while revocations cannot be reloaded (tokens would be refused), or
once the gateway is draining. Probes are unauthenticated, so one check runs at a time
and its answer is reused for `CACHE_SECONDS`: a flood of probes costs one store call
and one upstream connection per second at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

CACHE_SECONDS = 1.0
CHECK_TIMEOUT = 2.0


@dataclass(frozen=True)
class Verdict:
    ready: bool
    reason: str = ""


class Readiness:
    def __init__(
        self,
        *,
        upstream: tuple[str, int],
        store_check: Callable[[], Awaitable[None]] | None,
        stale: Callable[[], bool] = lambda: False,
        draining: Callable[[], bool] = lambda: False,
        timeout: float = CHECK_TIMEOUT,
        cache_seconds: float = CACHE_SECONDS,
    ) -> None:
        self.upstream = upstream
        self.store_check = store_check
        self.stale = stale
        self.draining = draining
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self._cached: tuple[float, Verdict] | None = None
        self._running: asyncio.Future[Verdict] | None = None

    async def check(self) -> Verdict:
        if self.draining():
            return Verdict(False, "draining: the gateway is shutting down")
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < self.cache_seconds:
            return self._cached[1]
        if self._running is None:
            self._running = asyncio.ensure_future(self._check())
        running = self._running
        try:
            verdict = await asyncio.shield(running)
        finally:
            if running.done() and self._running is running:
                self._running = None
        self._cached = (time.monotonic(), verdict)
        return verdict

    async def _check(self) -> Verdict:
        if self.store_check is not None:
            try:
                async with asyncio.timeout(self.timeout):
                    await self.store_check()
            except Exception as exc:
                return Verdict(False, f"store unavailable: {_name(exc)}")
        if self.stale():
            return Verdict(False, "revocation list is stale (store reloads failing)")
        host, port = self.upstream
        try:
            async with asyncio.timeout(self.timeout):
                _, writer = await asyncio.open_connection(host, port)
        except Exception as exc:
            return Verdict(
                False, f"upstream {host}:{port} does not accept connections: {_name(exc)}"
            )
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return Verdict(True)


def _name(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return text or type(exc).__name__
