"""Plain values passed between the HTTP/MCP layers and the store."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from backend.identity import ANONYMOUS, Identity

JSONObject = dict[str, Any]


def content_hash(content: str) -> str:
    return hashlib.sha256(content.strip().lower().encode("utf-8")).hexdigest()


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class NewMemory:
    content: str
    tags: tuple[str, ...] = ()
    memory_type: str | None = None
    metadata: JSONObject = field(default_factory=dict)
    stored_by: Identity = ANONYMOUS

    @property
    def content_hash(self) -> str:
        return content_hash(self.content)


@dataclass(frozen=True, slots=True)
class MemoryUpdate:
    tags: tuple[str, ...] | None = None
    memory_type: str | None = None
    metadata: JSONObject | None = None


@dataclass(frozen=True, slots=True)
class Memory:
    content: str
    content_hash: str
    tags: tuple[str, ...]
    memory_type: str | None
    metadata: JSONObject
    stored_by: str | None
    stored_by_subject: str | None
    created_at: float
    updated_at: float

    def to_json(self) -> JSONObject:
        # Attribution comes from trusted columns and overrides any caller-supplied keys.
        metadata = {
            **self.metadata,
            "stored_by": self.stored_by,
            "stored_by_subject": self.stored_by_subject,
        }
        return {
            "content": self.content,
            "content_hash": self.content_hash,
            "tags": list(self.tags),
            "memory_type": self.memory_type,
            "metadata": metadata,
            "created_at": self.created_at,
            "created_at_iso": iso(self.created_at),
            "updated_at": self.updated_at,
            "updated_at_iso": iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class StoreResult:
    memory: Memory
    created: bool


@dataclass(frozen=True, slots=True)
class PageRequest:
    page: int = 1
    page_size: int = 10
    tag: str | None = None
    memory_type: str | None = None


@dataclass(frozen=True, slots=True)
class MemoryPage:
    memories: list[Memory]
    total: int
    page: int
    page_size: int

    @property
    def has_more(self) -> bool:
        return self.page * self.page_size < self.total

    def to_json(self) -> JSONObject:
        return {
            "memories": [memory.to_json() for memory in self.memories],
            "total": self.total,
            "page": self.page,
            "page_size": self.page_size,
            "has_more": self.has_more,
        }


@dataclass(frozen=True, slots=True)
class SearchHit:
    memory: Memory
    score: float
    reason: str

    def to_json(self) -> JSONObject:
        return {
            "memory": self.memory.to_json(),
            "similarity_score": self.score,
            "relevance_reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class StoreStats:
    total_memories: int
    total_tags: int
    db_size_bytes: int
