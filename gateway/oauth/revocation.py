"""Revocation: the hot-path cache and the revoker (PROTOCOL T4, T5, T7).

`RevocationCache.is_revoked` is what the proxy calls on every request: two dictionary
lookups, no I/O. Local revocations land in it at once; `run()` reloads the store every
few seconds so revocations made by other replicas arrive too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from gateway.errors import InvalidToken
from gateway.oauth.tokens import LEEWAY_SECONDS, AccessToken, TokenService
from gateway.store.base import RefreshStore, RefreshToken, Revocation, RevocationStore, hash_secret

logger = logging.getLogger("gateway.oauth.revocation")


class RevocationCache:
    def __init__(self, store: RevocationStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._jtis: dict[str, float] = {}
        self._families: dict[str, float] = {}

    def is_revoked(self, token: AccessToken) -> bool:
        if token.jti in self._jtis:
            return True
        return token.family is not None and token.family in self._families

    def is_family_revoked(self, family: str) -> bool:
        return family in self._families

    def add(self, revocation: Revocation) -> None:
        target = self._jtis if revocation.kind == "jti" else self._families
        target[revocation.value] = max(revocation.expires_at, target.get(revocation.value, 0))

    async def refresh(self) -> None:
        """Merge the store's revocations in and drop expired entries."""
        loaded = await self.store.list_revocations(self.clock())
        for revocation in loaded:
            self.add(revocation)
        now = self.clock()
        self._jtis = {k: v for k, v in self._jtis.items() if v > now}
        self._families = {k: v for k, v in self._families.items() if v > now}

    async def run(self, interval: float) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:
                logger.exception("reloading revocations from the store failed")
            await asyncio.sleep(interval)


class _RevokerStore(RevocationStore, RefreshStore, Protocol):
    pass


class Revoker:
    """Records a revocation in the cache at once and in the store for other replicas."""

    def __init__(
        self,
        store: _RevokerStore,
        cache: RevocationCache,
        *,
        access_ttl: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.cache = cache
        self.access_ttl = access_ttl
        self.clock = clock

    async def revoke_family(self, family: str) -> None:
        """Every refresh token of the family, and every access token issued in it."""
        until = self.clock() + self.access_ttl + LEEWAY_SECONDS
        revocation = Revocation("family", family, until)
        self.cache.add(revocation)
        await self.store.add_revocation(revocation)
        await self.store.delete_family(family)

    async def revoke_access(self, token: AccessToken) -> None:
        revocation = Revocation("jti", token.jti, token.expires_at + LEEWAY_SECONDS)
        self.cache.add(revocation)
        await self.store.add_revocation(revocation)


async def find_refresh(store: RefreshStore, token: str, now: float) -> RefreshToken | None:
    record = await store.get_refresh(hash_secret(token))
    if record is None or record.expires_at <= now or record.rotated_at is not None:
        return None
    return record


def find_access(tokens: TokenService, token: str, audience: str) -> AccessToken | None:
    if token.count(".") != 2:
        return None
    try:
        return tokens.verify(token, audience=audience)
    except InvalidToken:
        return None
