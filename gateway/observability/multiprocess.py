"""Metrics across several worker processes (`serve --workers N`).

Each worker keeps its metrics in its own registry as usual; with several workers the
supervisor gives them a fresh directory in PROMETHEUS_MULTIPROC_DIR (prometheus-client's
multiprocess mode: values live in memory-mapped files there) and serves the sum of all
workers on the metrics listener itself, so one scrape sees the whole gateway.
"""

from __future__ import annotations

import asyncio
import os
import signal

WORKER_ENV = "MCP_GATEWAY_WORKER_OF"  # set by the supervisor: its pid
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def in_worker_pool() -> bool:
    return bool(os.environ.get(WORKER_ENV))


async def leave_with_supervisor(interval: float = 1.0) -> None:
    """In a worker: drain and exit (SIGTERM to itself) once the supervisor is gone, so
    no worker is left serving when the supervisor was killed outright."""
    supervisor = int(os.environ.get(WORKER_ENV) or 0)
    if not supervisor:
        return
    while os.getppid() == supervisor:  # noqa: ASYNC110 (nothing signals a parent's exit)
        await asyncio.sleep(interval)
    os.kill(os.getpid(), signal.SIGTERM)
