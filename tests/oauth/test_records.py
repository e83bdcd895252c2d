"""Expiring JSON records (gateway.people's sign-ins, people, grants) in every store."""

from __future__ import annotations

import asyncio

import pytest

from gateway.store.base import Store

pytestmark = pytest.mark.anyio
NOW = 1_900_000_000.0


async def test_put_get_list_delete(store: Store) -> None:
    await store.put_record("grant", "alice\x1fc1", {"scope": "read", "n": [1, 2]}, NOW + 60)
    await store.put_record("grant", "alice\x1fc2", {"scope": "write"}, NOW + 60)
    await store.put_record("grant", "bob\x1fc1", {"scope": "read"}, NOW + 60)
    await store.put_record("person", "alice", {"email": "a@example.com"}, NOW + 60)
    assert await store.get_record("grant", "alice\x1fc1", NOW) == {"scope": "read", "n": [1, 2]}
    listed = await store.list_records("grant", "alice\x1f", NOW)
    assert [key for key, _ in listed] == ["alice\x1fc1", "alice\x1fc2"]
    assert len(await store.list_records("grant", "", NOW)) == 3
    await store.put_record("grant", "alice\x1fc1", {"scope": "read write"}, NOW + 60)
    assert await store.get_record("grant", "alice\x1fc1", NOW) == {"scope": "read write"}
    assert await store.delete_record("grant", "alice\x1fc1")
    assert not await store.delete_record("grant", "alice\x1fc1")
    assert await store.get_record("grant", "alice\x1fc1", NOW) is None
    assert await store.get_record("person", "alice", NOW) == {"email": "a@example.com"}


async def test_expired_records_are_gone(store: Store) -> None:
    await store.put_record("signin", "s", {"nonce": "n"}, NOW + 10)
    assert await store.get_record("signin", "s", NOW + 11) is None
    assert await store.take_record("signin", "s", NOW + 11) is None
    assert await store.list_records("signin", "", NOW + 11) == []
    await store.put_record("signin", "t", {"nonce": "n"}, NOW + 10)
    await store.prune(NOW + 11)  # Redis: logical expiry on read, its TTL as a backstop
    assert await store.get_record("signin", "t", NOW + 11) is None


async def test_take_is_single_use_under_concurrency(store: Store) -> None:
    await store.put_record("signin", "state-hash", {"nonce": "n"}, NOW + 600)
    taken = await asyncio.gather(
        *(store.take_record("signin", "state-hash", NOW) for _ in range(8))
    )
    assert [t for t in taken if t is not None] == [{"nonce": "n"}]


async def test_a_kind_is_capped_soonest_to_expire_first(store: Store) -> None:
    for i in range(5):
        await store.put_record("signin", f"s{i}", {"i": i}, NOW + 100 + i, limit=3)
    kept = await store.list_records("signin", "", NOW)
    assert [key for key, _ in kept] == ["s2", "s3", "s4"]
    await store.put_record("other", "o", {}, NOW + 1, limit=3)  # per kind
    assert len(await store.list_records("signin", "", NOW)) == 3
