"""Redis store: OAuth state shared by several gateway replicas.

Every rule that must hold across replicas (a code redeemed once, a refresh token rotated
once, the client cap) runs as one Lua script, which Redis executes atomically. Expiry
follows the `now` each call is given, exactly as in the other stores: sorted sets index
records by expiry and `prune(now)` drops what has expired. Redis TTLs are only a
backstop (the logical expiry, measured on the wall clock, plus `TTL_SLACK`), so nothing
lingers when no replica prunes.

Key layout, under a prefix (default `mgw:`, or `?prefix=` in the URL):

    clients             hash    client_id -> client JSON
    clients:unused      zset    client_id, score issued_at; only never-used clients
    clients:used        hash    client_id -> first time it obtained a token
    clients:lru         zset    client_id, score last use (or issued_at); only clients not
                                registered by an operator, the ones eviction may drop
    clientfam:<id>      set     refresh families started by a client (dropped with it)
    code:<hash>         hash    data (JSON), used (times redeemed)
    codes:exp           zset    code hash, score expires_at
    rt:<hash>           hash    refresh-token fields (see RefreshToken)
    rt:exp              zset    token hash, score expires_at
    rt:sealed           zset    token hash, score rotated_at; tokens holding a sealed successor
    family:<family>     set     token hashes of one refresh family
    revocations         zset    "jti:<jti>" | "family:<family>", score expires_at
    consent:<hash>      string  pending consent JSON
    consents:exp        zset    consent hash, score expires_at
    ctr:<key>           string  rate-limit counter
    ctrs:exp            zset    counter key, score expires_at
    rec:<kind>:<key>    string  {"e": expires_at, "d": record JSON} (gateway.people)
    recs:<kind>         zset    record key, score expires_at

Scripts reach keys named by stored values (a successor, a family's members), so this
needs one Redis primary (standalone or Sentinel-managed), not Redis Cluster.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.models import Client
from gateway.store.base import (
    CODE_REPLAY_MEMORY,
    MAX_GRACE_SECONDS,
    MAX_LISTED_RECORDS,
    AuthorizationCode,
    ClientEntry,
    CodeRedemption,
    Grant,
    PendingConsent,
    RefreshRotation,
    RefreshToken,
    Revocation,
    RevocationKind,
    RotationOutcome,
    StoreUnavailable,
    client_from_json,
    client_to_json,
)

P = ParamSpec("P")
R = TypeVar("R")
DEFAULT_PREFIX = "mgw:"
# Backstop TTLs run this long past the logical expiry (covers clock skew between replicas).
TTL_SLACK = 300
PRUNE_BATCH = 500
DEFAULT_TIMEOUT = 5.0

_EXTEND_TTL = """
local function extend(key, ttl)
  local current = redis.call('TTL', key)
  if current >= 0 and current < ttl or current == -1 then redis.call('EXPIRE', key, ttl) end
end
"""

# KEYS: clients, clients:unused, clients:lru; ARGV: id, json, issued_at, limit, trusted
ADD_CLIENT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
   and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[5] == '0' then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
end
return 1
"""

# A client and its refresh tokens (every family it started). ARGV[1] of the caller is
# the key prefix.
_DROP_CLIENT = """
local function drop_client(p, id)
  local families = p .. 'clientfam:' .. id
  for _, family in ipairs(redis.call('SMEMBERS', families)) do
    for _, hash in ipairs(redis.call('SMEMBERS', p .. 'family:' .. family)) do
      redis.call('DEL', p .. 'rt:' .. hash)
      redis.call('ZREM', p .. 'rt:exp', hash)
      redis.call('ZREM', p .. 'rt:sealed', hash)
    end
    redis.call('DEL', p .. 'family:' .. family)
  end
  redis.call('DEL', families)
  redis.call('HDEL', p .. 'clients:used', id)
  redis.call('ZREM', p .. 'clients:unused', id)
  redis.call('ZREM', p .. 'clients:lru', id)
  return redis.call('HDEL', p .. 'clients', id)
end
"""

DELETE_CLIENT = _DROP_CLIENT + "return drop_client(ARGV[1], ARGV[2])"

EVICT_CLIENT = (
    _DROP_CLIENT
    + """
local oldest = redis.call('ZRANGE', ARGV[1] .. 'clients:lru', 0, 0)
if #oldest == 0 then return false end
drop_client(ARGV[1], oldest[1])
return oldest[1]
"""
)

EVICT_UNUSED_CLIENT = (
    _DROP_CLIENT
    + """
local oldest = redis.call('ZRANGE', ARGV[1] .. 'clients:unused', 0, 0)
if #oldest == 0 then return false end
drop_client(ARGV[1], oldest[1])
return oldest[1]
"""
)

REPLACE_CLIENT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 0
"""

MARK_CLIENT_USED = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 1 then
  redis.call('ZREM', KEYS[3], ARGV[1])
end
redis.call('ZADD', KEYS[4], 'XX', ARGV[2], ARGV[1])
return 0
"""

PRUNE_UNUSED_CLIENTS = """
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
for _, id in ipairs(stale) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
return #stale
"""

REDEEM_CODE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local uses = redis.call('HINCRBY', KEYS[1], 'used', 1)
return {redis.call('HGET', KEYS[1], 'data'), uses}
"""

# KEYS: rt:<hash>, rt:exp, family:<family>, revocations, clientfam:<client>
# ARGV: expires_at, ttl, hash, "family:<family>", issued_at, family, fields...
SAVE_REFRESH = (
    _EXTEND_TTL
    + """
local revoked = redis.call('ZSCORE', KEYS[4], ARGV[4])
if revoked and tonumber(revoked) > tonumber(ARGV[5]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[3])
extend(KEYS[3], tonumber(ARGV[2]))
redis.call('SADD', KEYS[5], ARGV[6])
extend(KEYS[5], tonumber(ARGV[2]))
return 1
"""
)

# KEYS: consent:<hash>, consents:exp; ARGV: data, ttl, hash, expires_at, limit, prefix
SAVE_CONSENT = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if excess > 0 then
  for _, h in ipairs(redis.call('ZRANGE', KEYS[2], 0, excess - 1)) do
    redis.call('DEL', ARGV[6] .. 'consent:' .. h)
    redis.call('ZREM', KEYS[2], h)
  end
end
return 0
"""

# KEYS: rt:<presented>, rt:<successor>, rt:exp, rt:sealed, family:<family>
# ARGV: now, grace, prefix, successor hash, sealed, successor expires_at, ttl,
#       presented hash, successor fields...
ROTATE_REFRESH = (
    _EXTEND_TTL
    + """
local token = redis.call('HGETALL', KEYS[1])
if #token == 0 then return {'unknown'} end
local rotated = redis.call('HGET', KEYS[1], 'rotated_at')
if not rotated then
  redis.call('HSET', KEYS[1], 'rotated_at', ARGV[1], 'successor_hash', ARGV[4],
             'sealed_successor', ARGV[5])
  redis.call('ZADD', KEYS[4], ARGV[1], ARGV[8])
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], unpack(ARGV, 9))
  redis.call('EXPIRE', KEYS[2], ARGV[7])
  redis.call('ZADD', KEYS[3], ARGV[6], ARGV[4])
  redis.call('SADD', KEYS[5], ARGV[4])
  extend(KEYS[5], tonumber(ARGV[7]))
  return {'rotated', token}
end
local sealed = redis.call('HGET', KEYS[1], 'sealed_successor')
local following = ARGV[3] .. 'rt:' .. (redis.call('HGET', KEYS[1], 'successor_hash') or '')
if tonumber(ARGV[1]) - tonumber(rotated) <= tonumber(ARGV[2]) and sealed
   and redis.call('EXISTS', following) == 1
   and redis.call('HEXISTS', following, 'rotated_at') == 0 then
  return {'grace', token}
end
return {'replayed', token}
"""
)

DELETE_FAMILY = """
for _, hash in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('DEL', ARGV[1] .. 'rt:' .. hash)
  redis.call('ZREM', KEYS[2], hash)
  redis.call('ZREM', KEYS[3], hash)
end
redis.call('DEL', KEYS[1])
return 0
"""

INCREMENT = """
local count = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[3])
return count
"""

# One batch of pruning; returns 1 when some index had more than a batch to drop.
# ARGV: prefix, now, code cutoff, sealed cutoff, batch
PRUNE = """
local p, now, batch = ARGV[1], ARGV[2], tonumber(ARGV[5])
local full = 0
local function expired(index, bound)
  local members = redis.call('ZRANGEBYSCORE', p .. index, '-inf', bound, 'LIMIT', 0, batch)
  if #members == batch then full = 1 end
  return members
end
for _, h in ipairs(expired('codes:exp', '(' .. ARGV[3])) do
  redis.call('DEL', p .. 'code:' .. h)
  redis.call('ZREM', p .. 'codes:exp', h)
end
for _, h in ipairs(expired('rt:exp', now)) do
  local family = redis.call('HGET', p .. 'rt:' .. h, 'family')
  if family then redis.call('SREM', p .. 'family:' .. family, h) end
  redis.call('DEL', p .. 'rt:' .. h)
  redis.call('ZREM', p .. 'rt:exp', h)
  redis.call('ZREM', p .. 'rt:sealed', h)
end
for _, h in ipairs(expired('rt:sealed', '(' .. ARGV[4])) do
  redis.call('HDEL', p .. 'rt:' .. h, 'sealed_successor')
  redis.call('ZREM', p .. 'rt:sealed', h)
end
redis.call('ZREMRANGEBYSCORE', p .. 'revocations', '-inf', now)
for _, h in ipairs(expired('consents:exp', now)) do
  redis.call('DEL', p .. 'consent:' .. h)
  redis.call('ZREM', p .. 'consents:exp', h)
end
for _, k in ipairs(expired('ctrs:exp', now)) do
  redis.call('DEL', p .. 'ctr:' .. k)
  redis.call('ZREM', p .. 'ctrs:exp', k)
end
return full
"""

_REFRESH_FLOATS = ("issued_at", "expires_at", "rotated_at")
_REFRESH_TEXT = ("family", "client_id", "subject", "scope", "resource", "successor_hash")


def split_url(url: str) -> tuple[str, str]:
    """(connection URL, key prefix): `?prefix=` is ours, every other parameter is redis-py's."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefixes = [value for name, value in query if name == "prefix"]
    rest = [(name, value) for name, value in query if name != "prefix"]
    connection = urlunsplit(parts._replace(query=urlencode(rest)))
    return connection, prefixes[-1] if prefixes else DEFAULT_PREFIX


def _bounded(
    method: Callable[Concatenate[RedisStore, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[RedisStore, P], Coroutine[Any, Any, R]]:
    """At most `store.timeout` per call, so a Redis that stops answering fails the request."""

    async def call(store: RedisStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            async with asyncio.timeout(store.timeout):
                return await method(store, *args, **kwargs)
        except (TimeoutError, OSError, RedisConnectionError, RedisTimeoutError) as exc:
            raise StoreUnavailable(f"redis: {exc or type(exc).__name__}") from exc

    return call


class RedisStore:
    def __init__(
        self,
        url: str,
        *,
        prefix: str | None = None,
        wall_clock: Callable[[], float] = time.time,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.url, url_prefix = split_url(url)
        self.timeout = timeout
        self.prefix = url_prefix if prefix is None else prefix
        self.wall_clock = wall_clock
        self._redis: aioredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}

    async def open(self) -> None:
        if self._redis is not None:
            return
        # No socket_timeout: with one, redis-py sends through asyncio.wait_for, which on
        # Python 3.11 can swallow a cancellation (the gateway then never shuts down).
        # Every call is bounded by `_bounded` instead.
        # No command retries: a script whose reply was lost may have run (a code redeemed,
        # a token rotated), and running it again would count a second use. The failure
        # surfaces as StoreUnavailable (503) and the HTTP client decides.
        client = aioredis.Redis.from_url(
            self.url,
            socket_timeout=None,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            async with asyncio.timeout(self.timeout):
                await client.ping()
        except BaseException:
            await client.aclose()
            raise
        self._redis = client
        scripts = {
            "add_client": ADD_CLIENT,
            "delete_client": DELETE_CLIENT,
            "evict_client": EVICT_CLIENT,
            "evict_unused_client": EVICT_UNUSED_CLIENT,
            "save_consent": SAVE_CONSENT,
            "replace_client": REPLACE_CLIENT,
            "mark_client_used": MARK_CLIENT_USED,
            "prune_unused_clients": PRUNE_UNUSED_CLIENTS,
            "redeem_code": REDEEM_CODE,
            "save_refresh": SAVE_REFRESH,
            "rotate_refresh": ROTATE_REFRESH,
            "delete_family": DELETE_FAMILY,
            "increment": INCREMENT,
            "prune": PRUNE,
        }
        self._scripts = {name: client.register_script(lua) for name, lua in scripts.items()}

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("RedisStore used before open()")
        return self._redis

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def ttl(self, expires_at: float) -> int:
        """Backstop TTL in seconds for a record that logically expires at `expires_at`."""
        return math.ceil(max(expires_at - self.wall_clock(), 0)) + TTL_SLACK

    async def _script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._scripts[name](keys=list(keys), args=list(args))

    # clients

    @_bounded
    async def add_client(self, client: Client, *, limit: int) -> bool:
        added = await self._script(
            "add_client",
            [self.key("clients"), self.key("clients:unused"), self.key("clients:lru")],
            [
                client.client_id,
                _client_json(client),
                client.client_id_issued_at,
                limit,
                "1" if client.trusted else "0",
            ],
        )
        return bool(added)

    @_bounded
    async def get_client(self, client_id: str) -> Client | None:
        raw = await self.redis.hget(self.key("clients"), client_id)
        return client_from_json(json.loads(raw)) if raw is not None else None

    @_bounded
    async def replace_client(self, client: Client) -> None:
        await self._script(
            "replace_client", [self.key("clients")], [client.client_id, _client_json(client)]
        )

    @_bounded
    async def delete_client(self, client_id: str) -> bool:
        return bool(await self._script("delete_client", [], [self.prefix, client_id]))

    @_bounded
    async def evict_client(self, *, unused_only: bool = False) -> str | None:
        script = "evict_unused_client" if unused_only else "evict_client"
        evicted = await self._script(script, [], [self.prefix])
        return evicted.decode() if evicted else None

    @_bounded
    async def mark_client_used(self, client_id: str, now: float) -> None:
        keys = [
            self.key("clients"),
            self.key("clients:used"),
            self.key("clients:unused"),
            self.key("clients:lru"),
        ]
        await self._script("mark_client_used", keys, [client_id, repr(now)])

    @_bounded
    async def client_was_used(self, client_id: str) -> bool:
        return bool(await self.redis.hexists(self.key("clients:used"), client_id))

    @_bounded
    async def prune_unused_clients(self, issued_before: float) -> int:
        keys = [self.key("clients"), self.key("clients:unused"), self.key("clients:lru")]
        return int(await self._script("prune_unused_clients", keys, [repr(issued_before)]))

    # codes

    @_bounded
    async def save_code(self, code: AuthorizationCode) -> None:
        data = json.dumps({k: v for k, v in vars(code).items() if k != "code_hash"})
        key = self.key("code", code.code_hash)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping={"data": data, "used": 0})
            pipe.expire(key, self.ttl(code.expires_at + CODE_REPLAY_MEMORY))
            pipe.zadd(self.key("codes:exp"), {code.code_hash: code.expires_at})
            await pipe.execute()

    @_bounded
    async def redeem_code(self, code_hash: str) -> CodeRedemption | None:
        found = await self._script("redeem_code", [self.key("code", code_hash)], [])
        if found is None:
            return None
        data, uses = found
        code = AuthorizationCode(code_hash=code_hash, **json.loads(data))
        return CodeRedemption(code=code, first_use=int(uses) == 1)

    # refresh tokens

    @_bounded
    async def save_refresh(self, token: RefreshToken) -> bool:
        keys = [
            self.key("rt", token.token_hash),
            self.key("rt:exp"),
            self.key("family", token.family),
            self.key("revocations"),
            self.key("clientfam", token.client_id),
        ]
        args = [
            repr(token.expires_at),
            self.ttl(token.expires_at),
            token.token_hash,
            f"family:{token.family}",
            repr(token.issued_at),
            token.family,
        ]
        saved = await self._script("save_refresh", keys, [*args, *_refresh_fields(token)])
        if not saved:
            return False
        if token.sealed_successor is not None and token.rotated_at is not None:
            await self.redis.zadd(self.key("rt:sealed"), {token.token_hash: token.rotated_at})
        return True

    @_bounded
    async def get_refresh(self, token_hash: str) -> RefreshToken | None:
        raw = await self.redis.hgetall(self.key("rt", token_hash))
        fields = cast(dict[bytes, bytes], raw)  # the client is built without decode_responses
        return _refresh_from(token_hash, fields) if fields else None

    @_bounded
    async def rotate_refresh(
        self, token_hash: str, successor: RefreshToken, sealed: bytes, *, now: float, grace: float
    ) -> RefreshRotation:
        keys = [
            self.key("rt", token_hash),
            self.key("rt", successor.token_hash),
            self.key("rt:exp"),
            self.key("rt:sealed"),
            self.key("family", successor.family),
        ]
        args = [
            repr(now),
            repr(grace),
            self.prefix,
            successor.token_hash,
            sealed,
            repr(successor.expires_at),
            self.ttl(successor.expires_at),
            token_hash,
            *_refresh_fields(successor),
        ]
        reply = await self._script("rotate_refresh", keys, args)
        outcome = cast(RotationOutcome, reply[0].decode())
        if outcome == "unknown":
            return RefreshRotation("unknown", None)
        token = _refresh_from(token_hash, _pairs(reply[1]))
        if outcome == "grace":
            return RefreshRotation("grace", token, token.sealed_successor)
        return RefreshRotation(outcome, token)

    @_bounded
    async def delete_family(self, family: str) -> None:
        keys = [self.key("family", family), self.key("rt:exp"), self.key("rt:sealed")]
        await self._script("delete_family", keys, [self.prefix])

    # revocations: one sorted set by expiry, so the 0.5-second cache reload is one ZRANGEBYSCORE

    @_bounded
    async def add_revocation(self, revocation: Revocation) -> None:
        member = f"{revocation.kind}:{revocation.value}"
        await self.redis.zadd(self.key("revocations"), {member: revocation.expires_at})

    @_bounded
    async def list_revocations(self, now: float) -> list[Revocation]:
        found = await self.redis.zrangebyscore(
            self.key("revocations"), f"({now!r}", "+inf", withscores=True
        )
        rows = cast(list[tuple[bytes, float]], found)
        return [_revocation(member, score) for member, score in rows]

    # consents

    @_bounded
    async def save_consent(self, pending: PendingConsent, *, limit: int) -> None:
        data = json.dumps({k: v for k, v in vars(pending).items() if k != "id_hash"})
        keys = [self.key("consent", pending.id_hash), self.key("consents:exp")]
        args = [
            data,
            self.ttl(pending.expires_at),
            pending.id_hash,
            repr(pending.expires_at),
            limit,
            self.prefix,
        ]
        await self._script("save_consent", keys, args)

    @_bounded
    async def take_consent(self, id_hash: str, now: float) -> PendingConsent | None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.getdel(self.key("consent", id_hash))
            pipe.zrem(self.key("consents:exp"), id_hash)
            raw, _ = await pipe.execute()
        if raw is None:
            return None
        pending = PendingConsent(id_hash=id_hash, **json.loads(raw))
        return pending if pending.expires_at > now else None

    # records (gateway.people)

    @_bounded
    async def put_record(
        self,
        kind: str,
        key: str,
        data: dict[str, Any],
        expires_at: float,
        *,
        limit: int | None = None,
    ) -> None:
        value = json.dumps({"e": expires_at, "d": data})
        index = self.key("recs", kind)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.key("rec", kind, key), value, ex=self.ttl(expires_at))
            pipe.zadd(index, {key: expires_at})
            # Records the backstop TTL has dropped leave the index here.
            pipe.zremrangebyscore(index, "-inf", f"({self.wall_clock() - TTL_SLACK!r}")
            pipe.zcard(index)
            results = await pipe.execute()
        count = results[-1]
        if limit is not None and int(count) > limit:
            dropped = cast(list[Any], await self.redis.zpopmin(index, int(count) - limit))
            names = [_text(pair[0]) for pair in dropped]
            if names:
                await self.redis.delete(*(self.key("rec", kind, n) for n in names))

    @_bounded
    async def get_record(self, kind: str, key: str, now: float) -> dict[str, Any] | None:
        return _live_record(await self.redis.get(self.key("rec", kind, key)), now)

    @_bounded
    async def take_record(self, kind: str, key: str, now: float) -> dict[str, Any] | None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.getdel(self.key("rec", kind, key))
            pipe.zrem(self.key("recs", kind), key)
            raw, _ = await pipe.execute()
        return _live_record(raw, now)

    @_bounded
    async def delete_record(self, kind: str, key: str) -> bool:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.key("rec", kind, key))
            pipe.zrem(self.key("recs", kind), key)
            deleted, _ = await pipe.execute()
        return bool(deleted)

    @_bounded
    async def list_records(
        self, kind: str, prefix: str, now: float
    ) -> list[tuple[str, dict[str, Any]]]:
        index = self.key("recs", kind)
        await self.redis.zremrangebyscore(index, "-inf", repr(now))
        keys = [
            k.decode() if isinstance(k, bytes) else str(k)
            for k in await self.redis.zrangebyscore(index, f"({now!r}", "+inf")
        ]
        keys = sorted(k for k in keys if k.startswith(prefix))[:MAX_LISTED_RECORDS]
        if not keys:
            return []
        values = await self.redis.mget([self.key("rec", kind, k) for k in keys])
        found = [(k, _live_record(v, now)) for k, v in zip(keys, values, strict=True)]
        return [(k, data) for k, data in found if data is not None]

    # counters

    @_bounded
    async def increment(self, key: str, expires_at: float) -> int:
        keys = [self.key("ctr", key), self.key("ctrs:exp")]
        return int(
            await self._script("increment", keys, [repr(expires_at), self.ttl(expires_at), key])
        )

    # operator views (bounded scans, for the CLI; never on a request path)

    @_bounded
    async def list_clients(self, *, limit: int) -> list[ClientEntry]:
        raw = cast(dict[bytes, bytes], await self.redis.hgetall(self.key("clients")))
        used = cast(dict[bytes, bytes], await self.redis.hgetall(self.key("clients:used")))
        entries = [
            ClientEntry(client_from_json(json.loads(data)), _float(used.get(client_id)))
            for client_id, data in raw.items()
        ]
        entries.sort(key=lambda e: (e.client.client_id_issued_at, e.client.client_id))
        return entries[:limit]

    @_bounded
    async def list_grants(
        self, now: float, *, client_id: str | None, subject: str | None, limit: int
    ) -> list[Grant]:
        found = await self.redis.zrangebyscore(self.key("rt:exp"), f"({now!r}", "+inf")
        hashes = [h.decode() for h in cast(list[bytes], found)]
        families: dict[str, Grant] = {}
        for start in range(0, len(hashes), PRUNE_BATCH):
            batch = hashes[start : start + PRUNE_BATCH]
            async with self.redis.pipeline(transaction=False) as pipe:
                for token_hash in batch:
                    pipe.hgetall(self.key("rt", token_hash))
                rows = await pipe.execute()
            for token_hash, fields in zip(batch, rows, strict=True):
                if not fields:
                    continue
                token = _refresh_from(token_hash, cast(dict[bytes, bytes], fields))
                if token.rotated_at is not None or token.expires_at <= now:
                    continue
                if (client_id is not None and token.client_id != client_id) or (
                    subject is not None and token.subject != subject
                ):
                    continue
                known = families.get(token.family)
                families[token.family] = Grant(
                    token.family, token.client_id, token.subject, token.scope, token.resource,
                    min(token.issued_at, known.issued_at) if known else token.issued_at,
                    max(token.expires_at, known.expires_at) if known else token.expires_at,
                )  # fmt: skip
        grants = sorted(families.values(), key=lambda g: g.issued_at)
        return grants[:limit]

    async def prune(self, now: float) -> None:
        args = [
            self.prefix,
            repr(now),
            repr(now - CODE_REPLAY_MEMORY),
            repr(now - MAX_GRACE_SECONDS),
        ]
        # Batches keep each script short, so other replicas' calls are never held up long.
        for _ in range(10_000):
            async with asyncio.timeout(self.timeout):
                more = await self._script("prune", [], [*args, PRUNE_BATCH])
            if not more:
                return


def _client_json(client: Client) -> str:
    return json.dumps(client_to_json(client))


def _refresh_fields(token: RefreshToken) -> list[str | bytes]:
    fields: list[str | bytes] = []
    for name in _REFRESH_TEXT:
        value = getattr(token, name)
        if value is not None:
            fields += [name, value]
    for name in _REFRESH_FLOATS:
        number = getattr(token, name)
        if number is not None:
            fields += [name, repr(float(number))]
    if token.sealed_successor is not None:
        fields += ["sealed_successor", token.sealed_successor]
    return fields


def _pairs(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def _refresh_from(token_hash: str, fields: Mapping[bytes, bytes]) -> RefreshToken:
    text = {
        name: fields[name.encode()].decode() for name in _REFRESH_TEXT if name.encode() in fields
    }
    numbers = {
        name: float(fields[name.encode()]) for name in _REFRESH_FLOATS if name.encode() in fields
    }
    return RefreshToken(
        token_hash=token_hash,
        family=text["family"],
        client_id=text["client_id"],
        subject=text["subject"],
        scope=text["scope"],
        resource=text["resource"],
        issued_at=numbers["issued_at"],
        expires_at=numbers["expires_at"],
        rotated_at=numbers.get("rotated_at"),
        successor_hash=text.get("successor_hash"),
        sealed_successor=fields.get(b"sealed_successor"),
    )


def _float(value: bytes | None) -> float | None:
    return None if value is None else float(value)


def _revocation(member: bytes, score: float) -> Revocation:
    kind, _, value = member.decode().partition(":")
    return Revocation(cast(RevocationKind, kind), value, float(score))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _live_record(raw: Any, now: float) -> dict[str, Any] | None:
    if raw is None:
        return None
    envelope = json.loads(raw)
    if float(envelope["e"]) <= now:
        return None
    data: dict[str, Any] = envelope["d"]
    return data
