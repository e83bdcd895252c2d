"""The store a storage URL names. Apart from `base` so the concrete stores, which
import `base`, are not imported back by it."""

from __future__ import annotations

from gateway.store.base import Store


def open_store(url: str) -> Store:
    """A store for `sqlite:///path`, `redis://...`, `rediss://...` or `memory://`."""
    if url.startswith(("redis://", "rediss://")):
        from gateway.store.redis import RedisStore

        return RedisStore(url)
    if url.startswith("sqlite:///"):
        from gateway.store.sqlite import SqliteStore

        return SqliteStore(url.removeprefix("sqlite:///"))
    if url in {"memory://", "memory"}:
        from gateway.store.memory import MemoryStore

        return MemoryStore()
    raise ValueError(f"unsupported OAuth storage URL {url.split(':', 1)[0]!r}")
