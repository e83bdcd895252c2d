"""Refresh tokens (PROTOCOL T5): opaque, stored hashed, rotated on every use.

Within the grace window a predecessor presented again gets the same successor. The
successor's plaintext is kept only sealed (AES-GCM) under a key derived from the
predecessor token itself, so the database alone never reveals a usable token, and the
sealed copy is dropped once the window has passed.
"""

from __future__ import annotations

import hashlib
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import InvalidGrant
from gateway.models import Client
from gateway.oauth.audit import audit
from gateway.oauth.revocation import Revoker
from gateway.store.base import RefreshStore, RefreshToken, hash_secret


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def seal(successor: str, predecessor: str) -> bytes:
    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(_key(predecessor)).encrypt(nonce, successor.encode(), b"refresh")


def unseal(sealed: bytes, predecessor: str) -> str | None:
    try:
        plain = AESGCM(_key(predecessor)).decrypt(sealed[:12], sealed[12:], b"refresh")
    except (InvalidTag, ValueError):
        return None
    return plain.decode()


def _key(predecessor: str) -> bytes:
    return hashlib.sha256(b"memory-gateway refresh seal\x00" + predecessor.encode()).digest()


def refresh_record(
    token: str,
    *,
    family: str,
    client_id: str,
    subject: str,
    scope: str,
    resource: str,
    now: float,
    ttl: int,
) -> RefreshToken:
    return RefreshToken(
        token_hash=hash_secret(token),
        family=family,
        client_id=client_id,
        subject=subject,
        scope=scope,
        resource=resource,
        issued_at=now,
        expires_at=now + ttl,
    )


async def find_current(
    store: RefreshStore, presented: str, client: Client, now: float
) -> RefreshToken:
    """The record of a presented refresh token of this client, rotated or not."""
    current = await store.get_refresh(hash_secret(presented))
    if current is None or current.client_id != client.client_id or current.expires_at <= now:
        raise InvalidGrant("unknown, expired or revoked refresh token")
    return current


async def rotate(
    store: RefreshStore,
    revoker: Revoker,
    presented: str,
    current: RefreshToken,
    *,
    now: float,
    ttl: int,
    grace: float,
) -> str:
    """The successor's plaintext, or InvalidGrant.

    Replaying an already-rotated token outside the grace window revokes its family.
    """
    successor = new_refresh_token()
    record = refresh_record(
        successor,
        family=current.family,
        client_id=current.client_id,
        subject=current.subject,
        scope=current.scope,
        resource=current.resource,
        now=now,
        ttl=ttl,
    )
    result = await store.rotate_refresh(
        current.token_hash, record, seal(successor, presented), now=now, grace=grace
    )
    if result.outcome == "rotated":
        return successor
    if result.outcome == "grace" and result.sealed_successor is not None:
        again = unseal(result.sealed_successor, presented)
        if again is not None:
            return again
    if result.outcome in {"replayed", "grace"}:
        audit.warning(
            "oauth refresh token replayed by client=%s: grant family revoked", current.client_id
        )
        await revoker.revoke_family(current.family)
    raise InvalidGrant("refresh token already used; its grant has been revoked")
