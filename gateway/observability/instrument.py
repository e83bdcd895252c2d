"""Store and metadata-document resolver, measured (latency and errors per operation)."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any, cast

from gateway.models import Client
from gateway.oauth.clients import ClientResolver
from gateway.observability.metrics import Metrics
from gateway.store.base import Store

_UNMEASURED = frozenset({"open", "close"})


class _MeasuredStore:
    """Delegates to a store; every coroutine method is timed and its failures counted."""

    def __init__(self, inner: Store, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name in _UNMEASURED or not inspect.iscoroutinefunction(attribute):
            return attribute
        measured = _measure(attribute, name, self._metrics)
        setattr(self, name, measured)  # built once per operation
        return measured


def _measure(call: Callable[..., Any], name: str, metrics: Metrics) -> Callable[..., Any]:
    latency = metrics.store_latency.labels(name)
    errors = metrics.store_errors.labels(name)

    async def measured(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await call(*args, **kwargs)
        except Exception:
            errors.inc()
            raise
        finally:
            latency.observe(time.perf_counter() - started)

    return measured


def measured_store(store: Store, metrics: Metrics) -> Store:
    return cast(Store, _MeasuredStore(store, metrics))


class MeasuredResolver:
    """Counts Client ID Metadata Document resolutions by outcome (ok / refused)."""

    def __init__(self, inner: ClientResolver, metrics: Metrics) -> None:
        self.inner = inner
        self.fetches = metrics.cimd_fetches

    async def resolve(self, client_id: str) -> Client:
        try:
            client = await self.inner.resolve(client_id)
        except Exception:
            self.fetches.labels("refused").inc()
            raise
        self.fetches.labels("ok").inc()
        return client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
