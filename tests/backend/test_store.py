from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

import pytest

from backend.fts import match_expression, similarity
from backend.identity import Identity, identity_from_headers
from backend.models import NewMemory, PageRequest, content_hash
from backend.store import MemoryStore


@pytest.fixture
def store(tmp_path: Path) -> MemoryStore:
    return MemoryStore(tmp_path / "store.db")


@pytest.mark.parametrize(
    ("query", "expression"),
    [
        ("cat", '"cat"'),
        ("cat dog", '"cat" OR "dog"'),
        ('say "hi"', '"say" OR "hi"'),
        ("NEAR(a b)", '"NEAR" OR "a" OR "b"'),
        ("col:val*", '"col" OR "val"'),
        ("***", None),
        ("   ", None),
    ],
)
def test_match_expression_quotes_every_word(query: str, expression: str | None) -> None:
    assert match_expression(query) == expression


@pytest.mark.parametrize(("bm25", "expected"), [(0.0, 0.0), (-1.0, 0.5), (-3.0, 0.75), (2.0, 0.0)])
def test_similarity_maps_bm25_into_unit_interval(bm25: float, expected: float) -> None:
    assert similarity(bm25) == expected


def test_content_hash_is_sha256_of_stripped_lowercase() -> None:
    assert content_hash(" Hello\n") == hashlib.sha256(b"hello").hexdigest()


def test_identity_headers_are_read_case_insensitively() -> None:
    identity = identity_from_headers(
        {"X-Auth-Client-Id": "c", "x-auth-subject": "s", "X-Auth-Scopes": "read write"}
    )
    assert identity == Identity(client_id="c", subject="s", scopes=("read", "write"))
    assert identity_from_headers(None) == Identity()


def test_database_is_wal_with_full_sync(store: MemoryStore) -> None:
    with sqlite3.connect(store.path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert store._writer.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL


def test_write_is_visible_to_a_fresh_connection_once_add_returns(store: MemoryStore) -> None:
    result = store.add(NewMemory("committed", tags=("t",)), now=1.0)
    with sqlite3.connect(store.path) as raw:
        rows = raw.execute("SELECT content FROM memories").fetchall()
    assert result.created
    assert rows == [("committed",)]


def test_concurrent_writers_and_readers_from_threads(store: MemoryStore) -> None:
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for number in range(25):
                store.add(NewMemory(f"w{worker} n{number}", tags=(f"w{worker}",)), now=number)
                store.list_page(PageRequest(page_size=5))
                store.search("n1", 5)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.list_page(PageRequest()).total == 200
    assert dict(store.tag_counts()) == {f"w{worker}": 25 for worker in range(8)}


def test_delete_removes_tags_and_search_entries(store: MemoryStore) -> None:
    digest = store.add(NewMemory("findable words", tags=("gone",)), now=1.0).memory.content_hash
    assert store.delete(digest)
    assert not store.delete(digest)
    assert store.search("findable", 5) == []
    assert store.tag_counts() == []


def test_close_is_idempotent(store: MemoryStore) -> None:
    store.get("x")
    store.close()
    store.close()  # a second close is a no-op, not an error
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        store.get("x")
