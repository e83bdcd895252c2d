"""Revocation: the hot-path cache and the revoker (PROTOCOL T4, T5, T7).

`RevocationCache.is_revoked` is what the proxy calls on every request: three dictionary
lookups and a clock read, no I/O. Local revocations land in it at once; `run()` reloads
the store every few seconds so revocations made by other replicas arrive too.

Fail closed: when the last successful reload is older than `max_staleness` seconds
(measured on a monotonic clock), `is_revoked` raises TemporarilyUnavailable, which the
proxy's authenticator turns into a 503, rather than trusting an outdated list.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from gateway.errors import InvalidToken, TemporarilyUnavailable
from gateway.oauth.tokens import LEEWAY_SECONDS, AccessToken, TokenService
from gateway.store.base import RefreshStore, RefreshToken, Revocation, RevocationStore, hash_secret

logger = logging.getLogger("gateway.oauth.revocation")
REPORT_EVERY = 30.0


def max_staleness(interval: float) -> float:
    """How old the cache may get before `is_revoked` fails closed: five missed reloads."""
    return max(5 * interval, 10.0)


class RevocationCache:
    def __init__(
        self,
        store: RevocationStore,
        *,
        clock: Callable[[], float] = time.time,
        max_staleness: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.clock = clock
        self.max_staleness = max_staleness
        self.monotonic = monotonic
        self.last_refresh = monotonic()
        self._jtis: dict[str, float] = {}
        self._families: dict[str, float] = {}
        self._clients: dict[str, float] = {}

    def is_revoked(self, token: AccessToken) -> bool:
        """Raises TemporarilyUnavailable when the cache is too old to be trusted."""
        if (
            self.max_staleness is not None
            and self.monotonic() - self.last_refresh > self.max_staleness
        ):
            raise TemporarilyUnavailable("the revocation list could not be reloaded")
        if token.jti in self._jtis or token.client_id in self._clients:
            return True
        return token.family is not None and token.family in self._families

    def is_family_revoked(self, family: str) -> bool:
        return family in self._families

    def is_client_revoked(self, client_id: str) -> bool:
        return client_id in self._clients

    def add(self, revocation: Revocation) -> None:
        target = self._target(revocation)
        target[revocation.value] = max(revocation.expires_at, target.get(revocation.value, 0))

    def _target(self, revocation: Revocation) -> dict[str, float]:
        if revocation.kind == "jti":
            return self._jtis
        return self._families if revocation.kind == "family" else self._clients

    async def refresh(self) -> None:
        """Merge the store's revocations in and drop expired entries."""
        loaded = await self.store.list_revocations(self.clock())
        for revocation in loaded:
            self.add(revocation)
        now = self.clock()
        self._jtis = {k: v for k, v in self._jtis.items() if v > now}
        self._families = {k: v for k, v in self._families.items() if v > now}
        self._clients = {k: v for k, v in self._clients.items() if v > now}
        self.last_refresh = self.monotonic()

    async def run(self, interval: float) -> None:
        failing_since: float | None = None
        last_report = 0.0
        while True:
            try:
                await self.refresh()
            except Exception as exc:
                now = self.monotonic()
                # Reloads run every fraction of a second: report a failure once, then
                # at most every REPORT_EVERY seconds while it lasts.
                if failing_since is None:
                    failing_since = last_report = now
                    logger.exception("reloading revocations from the store failed")
                elif now - last_report >= REPORT_EVERY:
                    last_report = now
                    logger.error(
                        "reloading revocations still fails after %.0f s: %s",
                        now - failing_since,
                        exc,
                    )
            else:
                if failing_since is not None:
                    logger.warning("revocations reload from the store again")
                    failing_since = None
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

    async def revoke_client(self, client_id: str) -> None:
        """Every access token issued to a deleted client (RFC 7592 §2.3); the store drops
        its refresh tokens with the client."""
        until = self.clock() + self.access_ttl + LEEWAY_SECONDS
        revocation = Revocation("client", client_id, until)
        self.cache.add(revocation)
        await self.store.add_revocation(revocation)

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
