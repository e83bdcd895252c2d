"""The memory operations shared by the REST API and the MCP tools.

Blocking SQLite calls run in worker threads; an event is published only after the
store has committed, so subscribers never see a change that could still be lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

import anyio.to_thread
from anyio import CapacityLimiter

from backend.events import MEMORY_CREATED, MEMORY_DELETED, MEMORY_UPDATED, EventBroker
from backend.models import (
    Memory,
    MemoryPage,
    MemoryUpdate,
    NewMemory,
    PageRequest,
    SearchHit,
    StoreResult,
    StoreStats,
)
from backend.store import MemoryStore

T = TypeVar("T")

DB_THREADS = 16


class MemoryService:
    def __init__(self, store: MemoryStore, broker: EventBroker, max_content: int) -> None:
        self.store = store
        self.broker = broker
        self.max_content = max_content
        self._limiter = CapacityLimiter(DB_THREADS)

    async def _run(self, call: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(call, limiter=self._limiter)

    async def add(self, new: NewMemory) -> StoreResult:
        result = await self._run(partial(self.store.add, new, time.time()))
        if result.created:
            self._announce(MEMORY_CREATED, result.memory)
        return result

    async def get(self, digest: str) -> Memory | None:
        return await self._run(partial(self.store.get, digest))

    async def update(self, digest: str, update: MemoryUpdate) -> Memory | None:
        memory = await self._run(partial(self.store.update, digest, update, time.time()))
        if memory is not None:
            self._announce(MEMORY_UPDATED, memory)
        return memory

    async def delete(self, digest: str) -> bool:
        deleted = await self._run(partial(self.store.delete, digest))
        if deleted:
            self.broker.publish(MEMORY_DELETED, {"content_hash": digest})
        return deleted

    async def list_page(self, request: PageRequest) -> MemoryPage:
        return await self._run(partial(self.store.list_page, request))

    async def search(self, query: str, limit: int) -> list[SearchHit]:
        return await self._run(partial(self.store.search, query, limit))

    async def search_by_tags(
        self, tags: Sequence[str], match_all: bool, limit: int
    ) -> list[Memory]:
        return await self._run(partial(self.store.search_by_tags, tags, match_all, limit))

    async def tag_counts(self) -> list[tuple[str, int]]:
        return await self._run(self.store.tag_counts)

    async def stats(self) -> StoreStats:
        return await self._run(self.store.stats)

    def _announce(self, name: str, memory: Memory) -> None:
        self.broker.publish(name, {"content_hash": memory.content_hash, "memory": memory.to_json()})
