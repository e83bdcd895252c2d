"""The server protocol, counted: open connections, and the start of a drain.

uvicorn calls `shutdown()` on every open connection when it begins a graceful shutdown
(after SIGTERM); that is where the observer learns that streams must end.
"""

from __future__ import annotations

import asyncio

from gateway.http_protocol import CorkedHttpToolsProtocol
from gateway.observability.exchange import Observer


def observed_protocol(
    base: type[CorkedHttpToolsProtocol], observer: Observer
) -> type[CorkedHttpToolsProtocol]:
    metrics = observer.metrics
    gauge = metrics.connections if metrics is not None else None

    class ObservedProtocol(base):  # type: ignore[valid-type,misc]
        def connection_made(self, transport: asyncio.Transport) -> None:
            if gauge is not None:
                gauge.inc()
            super().connection_made(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            if gauge is not None:
                gauge.dec()
            super().connection_lost(exc)

        def shutdown(self) -> None:
            observer.start_drain()
            super().shutdown()

    return ObservedProtocol
