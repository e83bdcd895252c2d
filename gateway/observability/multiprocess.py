"""Metrics across several worker processes (`serve --workers N`).

Each worker keeps its metrics in its own registry as usual; with several workers the
supervisor gives them a fresh directory in PROMETHEUS_MULTIPROC_DIR (prometheus-client's
multiprocess mode: values live in memory-mapped files there) and serves the sum of all
workers on the metrics listener itself, so one scrape sees the whole gateway.
"""

from __future__ import annotations

import os

WORKER_ENV = "MCP_GATEWAY_WORKER_OF"  # set by the supervisor: its pid
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def in_worker_pool() -> bool:
    return bool(os.environ.get(WORKER_ENV))
