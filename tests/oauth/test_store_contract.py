"""The same contract for every store implementation (memory, SQLite and Redis)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.models import Client
from gateway.store.base import (
    AuthorizationCode,
    PendingConsent,
    RefreshToken,
    Revocation,
    Store,
)

pytestmark = pytest.mark.anyio


def code(code_hash: str = "h1", expires_at: float = 1000.0) -> AuthorizationCode:
    return AuthorizationCode(
        code_hash=code_hash,
        client_id="c",
        redirect_uri="http://127.0.0.1/cb",
        redirect_uri_given=True,
        code_challenge="x" * 43,
        scope="read",
        resource="https://gw/mcp",
        subject="user",
        family="fam",
        expires_at=expires_at,
    )


def refresh(token_hash: str, family: str = "fam") -> RefreshToken:
    return RefreshToken(token_hash, family, "c", "user", "read", "https://gw/mcp", 0.0, 1000.0)


async def test_clients_round_trip_and_cap(store: Store) -> None:
    client = Client(
        "c1", ("https://a/cb",), "none", client_name="A", client_id_issued_at=5, metadata={"x": 1}
    )
    assert await store.add_client(client, limit=1)
    assert await store.get_client("c1") == client
    assert not await store.add_client(Client("c2", (), "client_secret_basic"), limit=1)
    assert await store.get_client("c2") is None
    assert await store.delete_client("c1")
    assert await store.get_client("c1") is None


async def test_r5_never_used_clients_expire_used_ones_stay(store: Store) -> None:
    for name in ("old-unused", "old-used", "new-unused"):
        issued = 100 if name.startswith("old") else 900
        await store.add_client(Client(name, (), "none", client_id_issued_at=issued), limit=10)
    await store.mark_client_used("old-used", 500)
    assert await store.prune_unused_clients(issued_before=500) == 1
    assert await store.get_client("old-unused") is None
    assert await store.get_client("old-used") is not None
    assert await store.get_client("new-unused") is not None


async def test_a7_code_redeemed_once_even_concurrently(store: Store) -> None:
    await store.save_code(code())
    results = await asyncio.gather(*(store.redeem_code("h1") for _ in range(5)))
    assert [r.first_use for r in results if r is not None].count(True) == 1
    assert all(r is not None and r.code == code() for r in results)
    assert await store.redeem_code("unknown") is None


async def test_t5_rotation_grace_and_replay(store: Store) -> None:
    await store.save_refresh(refresh("a"))
    first = await store.rotate_refresh("a", refresh("b"), b"sealed-b", now=10, grace=5)
    assert first.outcome == "rotated"
    assert (await store.get_refresh("b")) == refresh("b")
    again = await store.rotate_refresh("a", refresh("c"), b"sealed-c", now=12, grace=5)
    assert (again.outcome, again.sealed_successor) == ("grace", b"sealed-b")
    assert await store.get_refresh("c") is None
    late = await store.rotate_refresh("a", refresh("d"), b"sealed-d", now=20, grace=5)
    assert late.outcome == "replayed"
    unknown = await store.rotate_refresh("zz", refresh("e"), b"", now=20, grace=5)
    assert unknown.outcome == "unknown"


async def test_t5_grace_ends_once_successor_was_used(store: Store) -> None:
    await store.save_refresh(refresh("a"))
    await store.rotate_refresh("a", refresh("b"), b"sb", now=10, grace=5)
    await store.rotate_refresh("b", refresh("c"), b"sc", now=11, grace=5)
    result = await store.rotate_refresh("a", refresh("x"), b"sx", now=12, grace=5)
    assert result.outcome == "replayed"


async def test_t7_family_delete_and_revocation_listing(store: Store) -> None:
    await store.save_refresh(refresh("a", family="f1"))
    await store.save_refresh(refresh("b", family="f2"))
    await store.delete_family("f1")
    assert await store.get_refresh("a") is None
    assert await store.get_refresh("b") is not None
    await store.add_revocation(Revocation("jti", "j1", 100))
    await store.add_revocation(Revocation("family", "f1", 50))
    assert {r.value for r in await store.list_revocations(now=60)} == {"j1"}


async def test_a6_pending_consent_taken_once_and_expires(store: Store) -> None:
    pending = PendingConsent("p", "c", "http://127.0.0.1/cb", False, None, None, "read", "r", 100)
    await store.save_consent(pending, limit=10)
    assert await store.take_consent("p", now=50) == pending
    assert await store.take_consent("p", now=50) is None
    await store.save_consent(PendingConsent(**{**vars(pending), "id_hash": "q"}), limit=10)
    assert await store.take_consent("q", now=150) is None


async def test_counters_count_and_prune(store: Store) -> None:
    assert [await store.increment("k", 100) for _ in range(3)] == [1, 2, 3]
    await store.prune(now=200)
    assert await store.increment("k", 300) == 1


async def test_prune_keeps_used_codes_for_replay_detection(store: Store) -> None:
    await store.save_code(code("fresh", expires_at=2000))  # expired, but recently
    await store.save_code(code("ancient", expires_at=10))
    await store.prune(now=4000)
    assert await store.redeem_code("fresh") is not None
    assert await store.redeem_code("ancient") is None


async def test_t4_no_refresh_token_is_saved_into_a_revoked_family(store: Store) -> None:
    """Review #11: a code replay revoking the family while the first exchange is still
    saving its refresh token must win, whatever the order the replicas ran in."""
    await store.add_revocation(Revocation("family", "fam", 500.0))
    assert not await store.save_refresh(refresh("late"))
    assert await store.get_refresh("late") is None
    assert await store.save_refresh(refresh("other", family="fam2"))


async def test_r4_deleting_a_client_drops_its_refresh_tokens(store: Store) -> None:
    assert await store.add_client(Client("c", (), "client_secret_basic"), limit=10)
    assert await store.save_refresh(refresh("t1"))
    assert await store.save_refresh(refresh("t2", family="fam2"))
    assert await store.delete_client("c")
    assert await store.get_refresh("t1") is None
    assert await store.get_refresh("t2") is None


async def test_r5_eviction_takes_the_least_recently_used_open_client(store: Store) -> None:
    operator = Client("op", (), "client_secret_basic", client_id_issued_at=1, trusted=True)
    assert await store.add_client(operator, limit=10)
    for cid, issued in (("a", 10), ("b", 20)):
        assert await store.add_client(Client(cid, (), "none", client_id_issued_at=issued), limit=10)
    await store.mark_client_used("a", 30.0)
    b_token = RefreshToken("b-token", "b-fam", "b", "user", "read", "https://gw/mcp", 0.0, 1e3)
    assert await store.save_refresh(b_token)
    assert await store.evict_client() == "b"
    assert await store.get_refresh("b-token") is None
    assert await store.evict_client() == "a"
    assert await store.evict_client() is None
    assert await store.get_client("op") == operator


async def test_r5_unused_only_eviction_never_takes_a_used_client(store: Store) -> None:
    for cid, issued in (("used", 10), ("fresh", 20), ("fresher", 30)):
        assert await store.add_client(Client(cid, (), "none", client_id_issued_at=issued), limit=10)
    await store.mark_client_used("used", 40.0)
    assert await store.evict_client(unused_only=True) == "fresh"
    assert await store.evict_client(unused_only=True) == "fresher"
    assert await store.evict_client(unused_only=True) is None
    assert await store.get_client("used") is not None


async def test_r5_operator_clients_are_never_pruned_as_unused(store: Store) -> None:
    operator = Client("op", (), "client_secret_basic", client_id_issued_at=1, trusted=True)
    assert await store.add_client(operator, limit=10)
    assert await store.add_client(Client("anon", (), "none", client_id_issued_at=1), limit=10)
    assert await store.prune_unused_clients(issued_before=100) == 1
    assert await store.get_client("op") == operator
    assert await store.get_client("anon") is None


async def test_a6_pending_consents_are_capped_dropping_the_soonest_to_expire(store: Store) -> None:
    base = PendingConsent("p", "c", "http://127.0.0.1/cb", False, None, None, "read", "r", 100)
    for name, expires in (("old", 100.0), ("mid", 200.0), ("new", 300.0)):
        await store.save_consent(
            PendingConsent(**{**vars(base), "id_hash": name, "expires_at": expires}), limit=2
        )
    assert await store.take_consent("old", now=50) is None
    assert await store.take_consent("mid", now=50) is not None
    assert await store.take_consent("new", now=50) is not None
