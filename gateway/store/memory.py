"""In-process store: dictionaries; atomic because no method awaits between read and write."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from gateway.models import Client
from gateway.store.base import (
    CODE_REPLAY_MEMORY,
    MAX_GRACE_SECONDS,
    MAX_LISTED_RECORDS,
    AuthorizationCode,
    CodeRedemption,
    PendingConsent,
    RefreshRotation,
    RefreshToken,
    Revocation,
)


class MemoryStore:
    def __init__(self) -> None:
        self.clients: dict[str, Client] = {}
        self.client_last_used: dict[str, float] = {}
        self.codes: dict[str, tuple[AuthorizationCode, bool]] = {}
        self.refresh: dict[str, RefreshToken] = {}
        self.revocations: dict[tuple[str, str], Revocation] = {}
        self.consents: dict[str, PendingConsent] = {}
        self.counters: dict[str, tuple[int, float]] = {}
        self.records: dict[tuple[str, str], tuple[dict[str, Any], float]] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def add_client(self, client: Client, *, limit: int) -> bool:
        if len(self.clients) >= limit:
            return False
        self.clients[client.client_id] = client
        return True

    async def get_client(self, client_id: str) -> Client | None:
        return self.clients.get(client_id)

    async def replace_client(self, client: Client) -> None:
        if client.client_id in self.clients:
            self.clients[client.client_id] = client

    async def delete_client(self, client_id: str) -> bool:
        self.client_last_used.pop(client_id, None)
        for key in [k for k, t in self.refresh.items() if t.client_id == client_id]:
            del self.refresh[key]
        return self.clients.pop(client_id, None) is not None

    async def mark_client_used(self, client_id: str, now: float) -> None:
        if client_id in self.clients:
            self.client_last_used[client_id] = now

    async def client_was_used(self, client_id: str) -> bool:
        return client_id in self.client_last_used

    async def prune_unused_clients(self, issued_before: float) -> int:
        stale = [
            cid
            for cid, c in self.clients.items()
            if cid not in self.client_last_used
            and c.client_id_issued_at < issued_before
            and not c.trusted
        ]
        for cid in stale:
            del self.clients[cid]
        return len(stale)

    async def evict_client(self, *, unused_only: bool = False) -> str | None:
        candidates = [
            (self.client_last_used.get(cid, c.client_id_issued_at), cid)
            for cid, c in self.clients.items()
            if not c.trusted and not (unused_only and cid in self.client_last_used)
        ]
        if not candidates:
            return None
        _, victim = min(candidates)
        await self.delete_client(victim)
        return victim

    async def save_code(self, code: AuthorizationCode) -> None:
        self.codes[code.code_hash] = (code, False)

    async def redeem_code(self, code_hash: str) -> CodeRedemption | None:
        entry = self.codes.get(code_hash)
        if entry is None:
            return None
        code, used = entry
        self.codes[code_hash] = (code, True)
        return CodeRedemption(code=code, first_use=not used)

    async def save_refresh(self, token: RefreshToken) -> bool:
        revoked = self.revocations.get(("family", token.family))
        if revoked is not None and revoked.expires_at > token.issued_at:
            return False
        self.refresh[token.token_hash] = token
        return True

    async def get_refresh(self, token_hash: str) -> RefreshToken | None:
        return self.refresh.get(token_hash)

    async def rotate_refresh(
        self, token_hash: str, successor: RefreshToken, sealed: bytes, *, now: float, grace: float
    ) -> RefreshRotation:
        token = self.refresh.get(token_hash)
        if token is None:
            return RefreshRotation("unknown", None)
        if token.rotated_at is None:
            self.refresh[token_hash] = dataclasses.replace(
                token, rotated_at=now, successor_hash=successor.token_hash, sealed_successor=sealed
            )
            self.refresh[successor.token_hash] = successor
            return RefreshRotation("rotated", token)
        following = self.refresh.get(token.successor_hash or "")
        if (
            now - token.rotated_at <= grace
            and token.sealed_successor is not None
            and following is not None
            and following.rotated_at is None
        ):
            return RefreshRotation("grace", token, token.sealed_successor)
        return RefreshRotation("replayed", token)

    async def delete_family(self, family: str) -> None:
        for key in [k for k, t in self.refresh.items() if t.family == family]:
            del self.refresh[key]

    async def add_revocation(self, revocation: Revocation) -> None:
        self.revocations[(revocation.kind, revocation.value)] = revocation

    async def list_revocations(self, now: float) -> list[Revocation]:
        return [r for r in self.revocations.values() if r.expires_at > now]

    async def save_consent(self, pending: PendingConsent, *, limit: int) -> None:
        self.consents[pending.id_hash] = pending
        if len(self.consents) > limit:
            by_expiry = sorted(self.consents.values(), key=lambda p: p.expires_at)
            for dropped in by_expiry[: len(self.consents) - limit]:
                del self.consents[dropped.id_hash]

    async def take_consent(self, id_hash: str, now: float) -> PendingConsent | None:
        pending = self.consents.pop(id_hash, None)
        return pending if pending is not None and pending.expires_at > now else None

    async def increment(self, key: str, expires_at: float) -> int:
        count, _ = self.counters.get(key, (0, expires_at))
        self.counters[key] = (count + 1, expires_at)
        return count + 1

    async def prune(self, now: float) -> None:
        self.codes = {
            k: v for k, v in self.codes.items() if v[0].expires_at + CODE_REPLAY_MEMORY > now
        }
        self.refresh = {k: t for k, t in self.refresh.items() if t.expires_at > now}
        self.refresh = {k: _forget_sealed(t, now) for k, t in self.refresh.items()}
        self.revocations = {k: r for k, r in self.revocations.items() if r.expires_at > now}
        self.consents = {k: p for k, p in self.consents.items() if p.expires_at > now}
        self.counters = {k: c for k, c in self.counters.items() if c[1] > now}
        self.records = {k: r for k, r in self.records.items() if r[1] > now}

    # records (gateway.people)

    async def put_record(
        self,
        kind: str,
        key: str,
        data: dict[str, Any],
        expires_at: float,
        *,
        limit: int | None = None,
    ) -> None:
        self.records[(kind, key)] = (json.loads(json.dumps(data)), expires_at)
        if limit is not None:
            mine = sorted((r[1], k) for k, r in self.records.items() if k[0] == kind)
            for _, dropped in mine[: max(len(mine) - limit, 0)]:
                del self.records[dropped]

    async def get_record(self, kind: str, key: str, now: float) -> dict[str, Any] | None:
        found = self.records.get((kind, key))
        return found[0] if found is not None and found[1] > now else None

    async def take_record(self, kind: str, key: str, now: float) -> dict[str, Any] | None:
        found = self.records.pop((kind, key), None)
        return found[0] if found is not None and found[1] > now else None

    async def delete_record(self, kind: str, key: str) -> bool:
        return self.records.pop((kind, key), None) is not None

    async def list_records(
        self, kind: str, prefix: str, now: float
    ) -> list[tuple[str, dict[str, Any]]]:
        found = sorted(
            (key, data)
            for (k, key), (data, expires_at) in self.records.items()
            if k == kind and key.startswith(prefix) and expires_at > now
        )
        return found[:MAX_LISTED_RECORDS]


def _forget_sealed(token: RefreshToken, now: float) -> RefreshToken:
    rotated = token.rotated_at
    if token.sealed_successor is not None and rotated is not None:
        return token if now - rotated <= MAX_GRACE_SECONDS else _unsealed(token)
    return token


def _unsealed(token: RefreshToken) -> RefreshToken:
    return dataclasses.replace(token, sealed_successor=None)
