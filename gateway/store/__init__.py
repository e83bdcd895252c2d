"""Authorization-server state behind small Protocols, one per feature.

ClientStore        registered clients (RFC 7591), secrets and registration tokens hashed
CodeStore          authorization codes, consumed atomically (single use)
RefreshStore       refresh tokens by hash, rotated atomically, grouped in families
RevocationStore    revoked access-token ids and families, read by the hot-path cache
ConsentStore       pending consent requests, taken once
CounterStore       fixed-window counters for rate limiting

`Store` is the aggregate the authorization server is built with. Three implementations,
chosen by `factory.open_store` from the storage URL: `memory.MemoryStore` (tests, single
process), `sqlite.SqliteStore` (default) and `redis.RedisStore` (replicas sharing state).
"""

from __future__ import annotations

from gateway.store.base import (
    AuthorizationCode,
    ClientStore,
    CodeRedemption,
    CodeStore,
    ConsentStore,
    CounterStore,
    PendingConsent,
    RefreshRotation,
    RefreshStore,
    RefreshToken,
    Revocation,
    RevocationKind,
    RevocationStore,
    Store,
    hash_secret,
)
from gateway.store.factory import open_store

__all__ = [
    "AuthorizationCode",
    "ClientStore",
    "CodeRedemption",
    "CodeStore",
    "ConsentStore",
    "CounterStore",
    "PendingConsent",
    "RefreshRotation",
    "RefreshStore",
    "RefreshToken",
    "Revocation",
    "RevocationKind",
    "RevocationStore",
    "Store",
    "hash_secret",
    "open_store",
]
