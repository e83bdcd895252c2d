"""SQLite storage: one writer connection behind a lock, a pool of WAL readers.

Every method is blocking and thread-safe; callers on the event loop run them in a
worker thread. A write returns only after COMMIT with ``synchronous=FULL``, so
anything acknowledged survives a crash or power loss.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from backend.fts import match_expression, similarity
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

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS memories (
    id INTEGER PRIMARY KEY,
    content_hash TEXT NOT NULL UNIQUE,
    content TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    memory_type TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    stored_by TEXT,
    stored_by_subject TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS memories_by_created ON memories(created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS memories_by_type ON memories(memory_type, created_at DESC);
CREATE TABLE IF NOT EXISTS memory_tags (
    memory_id INTEGER NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    PRIMARY KEY (memory_id, tag)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS memory_tags_by_tag ON memory_tags(tag, memory_id);
CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5(
    content, content='memories', content_rowid='id',
    tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS memories_fts_insert AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts(rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER IF NOT EXISTS memories_fts_delete AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts(memories_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;
CREATE TRIGGER IF NOT EXISTS memories_fts_update AFTER UPDATE OF content ON memories BEGIN
    INSERT INTO memories_fts(memories_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO memories_fts(rowid, content) VALUES (new.id, new.content);
END;
"""

# SQL text is only ever built from these constants and "?" placeholders (hence the noqa S608s).
_COLUMNS = (
    "m.content, m.content_hash, m.tags, m.memory_type, m.metadata,"
    " m.stored_by, m.stored_by_subject, m.created_at, m.updated_at"
)


def _connect(path: Path) -> sqlite3.Connection:
    # Autocommit mode: transactions are opened explicitly, so none is left dangling.
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA busy_timeout = 5000")
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("PRAGMA synchronous = FULL")
    return connection


def _row_to_memory(row: Sequence[Any]) -> Memory:
    return Memory(
        content=row[0],
        content_hash=row[1],
        tags=tuple(json.loads(row[2])),
        memory_type=row[3],
        metadata=json.loads(row[4]),
        stored_by=row[5],
        stored_by_subject=row[6],
        created_at=row[7],
        updated_at=row[8],
    )


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class MemoryStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._write_lock = threading.Lock()
        self._writer = _connect(self.path)
        self._writer.execute("PRAGMA journal_mode = WAL")
        self._writer.executescript(_SCHEMA)
        self._writer.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._idle_readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all_readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        with self._write_lock, self._readers_lock:
            if self._closed:
                return
            self._closed = True
            for connection in self._all_readers:
                connection.close()
            self._writer.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
            self._writer.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        connection = self._checkout_reader()
        try:
            # One snapshot for every statement of the read, e.g. a page and its total.
            connection.execute("BEGIN")
            try:
                yield connection
            finally:
                connection.execute("COMMIT")
        finally:
            self._idle_readers.put(connection)

    def _checkout_reader(self) -> sqlite3.Connection:
        try:
            return self._idle_readers.get_nowait()
        except queue.Empty:
            pass
        with self._readers_lock:
            if self._closed:
                raise sqlite3.ProgrammingError("store is closed")
            connection = _connect(self.path)
            connection.execute("PRAGMA query_only = ON")
            self._all_readers.append(connection)
            return connection

    def add(self, new: NewMemory, now: float) -> StoreResult:
        digest = new.content_hash
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO memories (content_hash, content, tags, memory_type, metadata,"
                " stored_by, stored_by_subject, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(content_hash) DO NOTHING",
                (
                    digest,
                    new.content,
                    _dumps(list(new.tags)),
                    new.memory_type,
                    _dumps(new.metadata),
                    new.stored_by.client_id,
                    new.stored_by.subject,
                    now,
                    now,
                ),
            )
            created = cursor.rowcount == 1
            if created:
                _replace_tags(db, cursor.lastrowid, new.tags)
            memory = _fetch(db, digest)
        assert memory is not None
        return StoreResult(memory=memory, created=created)

    def get(self, digest: str) -> Memory | None:
        with self._read() as db:
            return _fetch(db, digest)

    def update(self, digest: str, update: MemoryUpdate, now: float) -> Memory | None:
        with self._write() as db:
            current = _fetch(db, digest)
            if current is None:
                return None
            tags = current.tags if update.tags is None else update.tags
            memory_type = update.memory_type or current.memory_type
            metadata = {**current.metadata, **(update.metadata or {})}
            row = db.execute(
                "UPDATE memories SET tags = ?, memory_type = ?, metadata = ?, updated_at = ?"
                " WHERE content_hash = ? RETURNING id",
                (_dumps(list(tags)), memory_type, _dumps(metadata), now, digest),
            ).fetchone()
            if update.tags is not None:
                _replace_tags(db, row[0], update.tags)
            return _fetch(db, digest)

    def delete(self, digest: str) -> bool:
        with self._write() as db:
            cursor = db.execute("DELETE FROM memories WHERE content_hash = ?", (digest,))
            return cursor.rowcount == 1

    def list_page(self, request: PageRequest) -> MemoryPage:
        where, params = _filters(request)
        offset = (request.page - 1) * request.page_size
        with self._read() as db:
            count = f"SELECT COUNT(*) FROM memories m {where}"  # noqa: S608 (constant fragments)
            (total,) = db.execute(count, params).fetchone()
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM memories m {where}"  # noqa: S608
                " ORDER BY m.created_at DESC, m.id DESC LIMIT ? OFFSET ?",
                (*params, request.page_size, offset),
            ).fetchall()
        return MemoryPage(
            memories=[_row_to_memory(row) for row in rows],
            total=total,
            page=request.page,
            page_size=request.page_size,
        )

    def search(self, query: str, limit: int) -> list[SearchHit]:
        expression = match_expression(query)
        if expression is None:
            return []
        with self._read() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS}, bm25(memories_fts) AS rank FROM memories_fts"  # noqa: S608
                " JOIN memories m ON m.id = memories_fts.rowid"
                " WHERE memories_fts MATCH ? ORDER BY rank LIMIT ?",
                (expression, limit),
            ).fetchall()
        return [
            SearchHit(_row_to_memory(row), similarity(row[9]), "full-text match (bm25)")
            for row in rows
        ]

    def search_by_tags(self, tags: Sequence[str], match_all: bool, limit: int) -> list[Memory]:
        placeholders = ", ".join("?" for _ in tags)
        needed = len(tags) if match_all else 1
        with self._read() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM memories m WHERE m.id IN ("  # noqa: S608
                f" SELECT memory_id FROM memory_tags WHERE tag IN ({placeholders})"
                " GROUP BY memory_id HAVING COUNT(*) >= ?)"
                " ORDER BY m.created_at DESC, m.id DESC LIMIT ?",
                (*tags, needed, limit),
            ).fetchall()
        return [_row_to_memory(row) for row in rows]

    def tag_counts(self) -> list[tuple[str, int]]:
        with self._read() as db:
            rows = db.execute(
                "SELECT tag, COUNT(*) AS uses FROM memory_tags GROUP BY tag ORDER BY uses DESC, tag"
            ).fetchall()
        return [(tag, count) for tag, count in rows]

    def stats(self) -> StoreStats:
        with self._read() as db:
            (memories,) = db.execute("SELECT COUNT(*) FROM memories").fetchone()
            (tags,) = db.execute("SELECT COUNT(DISTINCT tag) FROM memory_tags").fetchone()
            (pages,) = db.execute("PRAGMA page_count").fetchone()
            (page_size,) = db.execute("PRAGMA page_size").fetchone()
        return StoreStats(total_memories=memories, total_tags=tags, db_size_bytes=pages * page_size)


def _fetch(db: sqlite3.Connection, digest: str) -> Memory | None:
    row = db.execute(
        f"SELECT {_COLUMNS} FROM memories m WHERE m.content_hash = ?",  # noqa: S608
        (digest,),
    ).fetchone()
    return None if row is None else _row_to_memory(row)


def _replace_tags(db: sqlite3.Connection, memory_id: int | None, tags: Sequence[str]) -> None:
    db.execute("DELETE FROM memory_tags WHERE memory_id = ?", (memory_id,))
    db.executemany(
        "INSERT INTO memory_tags (memory_id, tag) VALUES (?, ?)",
        [(memory_id, tag) for tag in tags],
    )


def _filters(request: PageRequest) -> tuple[str, tuple[str, ...]]:
    clauses: list[str] = []
    params: list[str] = []
    if request.tag is not None:
        clauses.append(
            "EXISTS (SELECT 1 FROM memory_tags t WHERE t.memory_id = m.id AND t.tag = ?)"
        )
        params.append(request.tag)
    if request.memory_type is not None:
        clauses.append("m.memory_type = ?")
        params.append(request.memory_type)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    return where, tuple(params)
