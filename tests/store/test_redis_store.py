"""What the Redis store adds over the shared contract: several connections (replicas) at
once, key prefixes, TTL backstops, bounded waits and clean cancellation.

The contract itself (tests/oauth/test_store_contract.py) also runs against Redis.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.authserver import build_authorization_server
from gateway.models import Client
from gateway.oauth.keys import hs256_ring
from gateway.oauth.revocation import RevocationCache
from gateway.oauth.tokens import TokenService
from gateway.settings import Settings
from gateway.store.base import (
    CODE_REPLAY_MEMORY,
    AuthorizationCode,
    RefreshToken,
    Revocation,
    StoreUnavailable,
)
from gateway.store.factory import open_store
from gateway.store.redis import DEFAULT_PREFIX, TTL_SLACK, RedisStore, split_url
from tests.ports import reserved_port
from tests.store.redis_server import redis_server, require_redis_server, unique_prefix

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

NOW = 1_900_000_000.0


def code(code_hash: str = "h1", expires_at: float = NOW + 600) -> AuthorizationCode:
    return AuthorizationCode(
        code_hash, "c", "http://127.0.0.1/cb", True, "x" * 43, "read", "r", "u", "fam", expires_at
    )


def refresh(token_hash: str, expires_at: float = NOW + 3600) -> RefreshToken:
    return RefreshToken(token_hash, "fam", "c", "user", "read", "r", NOW, expires_at)


@pytest.fixture
async def replicas(redis_url: str) -> AsyncIterator[Callable[[], RedisStore]]:
    """Factory of stores on one prefix, each with its own connection pool, like replicas."""
    prefix = unique_prefix()
    made: list[RedisStore] = []

    def make() -> RedisStore:
        made.append(RedisStore(f"{redis_url}?prefix={prefix}"))
        return made[-1]

    yield make
    for store in made:
        await store.close()


async def opened(*stores: RedisStore) -> tuple[RedisStore, ...]:
    for store in stores:
        await store.open()
    return stores


@pytest.mark.parametrize(
    ("url", "connection", "prefix"),
    [
        ("redis://h:6379/0", "redis://h:6379/0", DEFAULT_PREFIX),
        ("redis://h:6379/0?prefix=gw1:", "redis://h:6379/0", "gw1:"),
        (
            "rediss://:pw@h/2?ssl_cert_reqs=required&prefix=a",
            "rediss://:pw@h/2?ssl_cert_reqs=required",
            "a",
        ),
        ("redis://h?prefix=", "redis://h", ""),
    ],
)
def test_prefix_comes_from_the_url_and_is_not_passed_to_redis(
    url: str, connection: str, prefix: str
) -> None:
    assert split_url(url) == (connection, prefix)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://127.0.0.1:6380/1"])
def test_open_store_accepts_redis_urls(url: str) -> None:
    assert isinstance(open_store(url), RedisStore)


async def test_a7_code_redeemed_once_across_replicas(
    replicas: Callable[[], RedisStore],
) -> None:
    a, b = await opened(replicas(), replicas())
    await a.save_code(code())
    results = await asyncio.gather(*(s.redeem_code("h1") for s in (a, b) * 5))
    assert [r.first_use for r in results if r is not None].count(True) == 1


async def test_t5_concurrent_rotation_across_replicas_one_successor(
    replicas: Callable[[], RedisStore],
) -> None:
    a, b = await opened(replicas(), replicas())
    await a.save_refresh(refresh("old"))
    results = await asyncio.gather(
        *(
            store.rotate_refresh("old", refresh(f"new{i}"), f"sealed{i}".encode(), now=NOW, grace=5)
            for i, store in enumerate((a, b) * 4)
        )
    )
    outcomes = sorted(r.outcome for r in results)
    assert outcomes == ["grace"] * 7 + ["rotated"]
    winner = next(i for i, r in enumerate(results) if r.outcome == "rotated")
    assert {r.sealed_successor for r in results if r.outcome == "grace"} == {
        f"sealed{winner}".encode()
    }
    stored = [await b.get_refresh(f"new{i}") for i in range(8)]
    assert [s.token_hash for s in stored if s is not None] == [f"new{winner}"]


async def test_r5_client_cap_holds_under_concurrent_registration(
    replicas: Callable[[], RedisStore],
) -> None:
    a, b = await opened(replicas(), replicas())
    clients = [Client(f"c{i}", (), "none") for i in range(20)]
    added = await asyncio.gather(
        *((a if i % 2 else b).add_client(c, limit=5) for i, c in enumerate(clients))
    )
    assert added.count(True) == 5
    assert sum([await a.get_client(c.client_id) is not None for c in clients]) == 5


async def test_r5_rate_limit_counter_is_shared(replicas: Callable[[], RedisStore]) -> None:
    a, b = await opened(replicas(), replicas())
    counts = await asyncio.gather(*(s.increment("reg:1.2.3.4:7", NOW + 60) for s in (a, b) * 5))
    assert sorted(counts) == list(range(1, 11))


async def test_t7_revocation_on_one_replica_reaches_the_other_cache(
    replicas: Callable[[], RedisStore],
) -> None:
    a, b = await opened(replicas(), replicas())
    cache = RevocationCache(b, clock=lambda: NOW)
    await a.add_revocation(Revocation("family", "fam:with:colons", NOW + 60))
    await a.add_revocation(Revocation("jti", "j1", NOW - 1))
    await cache.refresh()
    assert cache.is_family_revoked("fam:with:colons")
    assert await b.list_revocations(NOW) == [Revocation("family", "fam:with:colons", NOW + 60)]


async def test_prefixes_isolate_deployments_on_one_server(redis_url: str) -> None:
    one, two = (
        RedisStore(redis_url, prefix=unique_prefix()),
        RedisStore(redis_url, prefix=unique_prefix()),
    )
    await opened(one, two)
    try:
        await one.add_client(Client("shared-id", (), "none"), limit=1)
        assert await two.get_client("shared-id") is None
        assert await two.add_client(Client("other", (), "none"), limit=1)
    finally:
        await one.close()
        await two.close()


async def test_records_carry_a_backstop_ttl_so_nothing_lingers(redis_url: str) -> None:
    store = RedisStore(redis_url, prefix=unique_prefix(), wall_clock=lambda: NOW)
    await store.open()
    raw = aioredis.Redis.from_url(redis_url)
    try:
        await store.save_code(code(expires_at=NOW + 600))
        await store.save_refresh(refresh("t", expires_at=NOW + 3600))
        await store.increment("k", NOW + 60)
        ttls = [await raw.ttl(store.key(*k)) for k in (("code", "h1"), ("rt", "t"), ("ctr", "k"))]
        expected = [600 + CODE_REPLAY_MEMORY, 3600, 60]
        assert all(e <= t <= e + TTL_SLACK for t, e in zip(ttls, expected, strict=True))
        assert 3600 <= await raw.ttl(store.key("family", "fam")) <= 3600 + TTL_SLACK
    finally:
        await raw.aclose()
        await store.close()


async def test_prune_empties_the_expiry_indexes(redis_url: str) -> None:
    store = RedisStore(redis_url, prefix=unique_prefix())
    await store.open()
    raw = aioredis.Redis.from_url(redis_url)
    try:
        for i in range(3):
            await store.save_code(code(f"c{i}", expires_at=NOW))
            await store.save_refresh(refresh(f"r{i}", expires_at=NOW))
            await store.increment(f"k{i}", NOW)
        await store.prune(NOW + CODE_REPLAY_MEMORY + 1)
        indexes = ("codes:exp", "rt:exp", "ctrs:exp")
        assert [await raw.zcard(store.key(i)) for i in indexes] == [0, 0, 0]
        assert await raw.scard(store.key("family", "fam")) == 0
        assert await store.get_refresh("r0") is None
    finally:
        await raw.aclose()
        await store.close()


async def test_shutdown_cancels_the_revocation_reload_mid_call(redis_url: str) -> None:
    """The gateway stops its 2-second revocation reload by cancelling it; a cancellation
    landing inside a Redis call must not be swallowed (or shutdown waits forever)."""
    store = RedisStore(redis_url, prefix=unique_prefix())
    await store.open()
    try:
        for delay in (0.0, 0.0, 0.0005, 0.001, 0.002) * 4:
            task = asyncio.create_task(RevocationCache(store).run(interval=2))
            await asyncio.sleep(delay)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=1)
            assert done, "the reload loop outlived its cancellation"
            assert task.cancelled()
    finally:
        await store.close()


async def test_unreachable_redis_fails_fast_at_start_up() -> None:
    store = RedisStore(f"redis://127.0.0.1:{reserved_port()}/0", timeout=2)
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(store.open(), 10)


async def test_silent_redis_fails_the_call_within_the_timeout() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        store = RedisStore(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", timeout=0.5)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(store.open(), 10)


async def test_storage_down_gives_json_error_not_a_hang(tmp_path: Path) -> None:
    """Fail closed: with Redis gone, registration answers 503 temporarily_unavailable."""
    binary = require_redis_server()
    settings = Settings(issuer="http://127.0.0.1:9", consent="auto", cimd_enabled=False)
    tokens = TokenService(hs256_ring("k" * 40), issuer=settings.issuer, ttl=60)
    with redis_server(binary, tmp_path) as url:
        store = RedisStore(url, timeout=2)
        server = build_authorization_server(settings, tokens=tokens, store=store)
        await server.startup()
    # Starlette re-raises after answering (for the server to log); the client gets the answer.
    transport = httpx.ASGITransport(app=server.app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url=settings.issuer) as http:
            response = await asyncio.wait_for(
                http.post("/oauth/register", json={"redirect_uris": ["http://127.0.0.1/cb"]}),
                10,
            )
        assert response.status_code == 503
        assert response.json()["error"] == "temporarily_unavailable"
        assert response.headers["retry-after"] == "5"
        assert "Traceback" not in response.text
    finally:
        await asyncio.wait_for(server.shutdown(), 10)


class ReplyCutter:
    """A loopback relay to Redis that, once armed, passes the next script call through
    and then drops the connection instead of relaying Redis's reply: the script ran, the
    caller never hears so."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.armed = False
        self.cut = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        doomed = asyncio.Event()

        async def to_redis() -> None:
            while chunk := await reader.read(65536):
                if self.armed and b"EVALSHA" in chunk:
                    self.armed = False
                    doomed.set()
                up_writer.write(chunk)
                await up_writer.drain()

        async def to_client() -> None:
            while chunk := await up_reader.read(65536):
                if doomed.is_set():
                    self.cut += 1
                    return
                writer.write(chunk)
                await writer.drain()

        pumps = [asyncio.create_task(to_redis()), asyncio.create_task(to_client())]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            writer.close()
            up_writer.close()


async def test_a_lost_redemption_reply_is_unavailable_and_never_resent(redis_url: str) -> None:
    """Redis ran the redemption script but the reply was lost: the call fails as
    StoreUnavailable (503 temporarily_unavailable at the token endpoint, which the client
    may retry), and the client library never re-sends the script by itself, which would
    count a second use and make the one legitimate exchange look like a replay (T4)."""
    upstream_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    cutter = ReplyCutter(upstream_port)
    relay = await asyncio.start_server(cutter.serve, "127.0.0.1", 0)
    port = relay.sockets[0].getsockname()[1]
    prefix = unique_prefix()
    store = RedisStore(f"redis://127.0.0.1:{port}/0", prefix=prefix, timeout=5)
    direct = aioredis.Redis.from_url(redis_url)
    try:
        await store.open()
        await store.save_code(code("h1"))
        assert await store.redeem_code("warm-up") is None  # the script is loaded by now
        cutter.armed = True
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(store.redeem_code("h1"), 10)
        assert cutter.cut == 1
        assert await direct.hget(f"{prefix}code:h1", "used") == b"1"  # ran exactly once
        again = await store.redeem_code("h1")
        assert again is not None
        assert not again.first_use
    finally:
        await store.close()
        await direct.aclose()
        relay.close()
        await relay.wait_closed()
