"""Signing keys for access tokens (RFC 9068 §2.1, RFC 7517, RFC 7638).

ES256 keys live in `<state_dir>/keys/` as PEM files named by their RFC 7638 thumbprint,
with `keys.json` recording which key signs and when older ones were retired, so tokens
survive a restart and a rotation keeps old keys in the JWKS until their tokens expire.
With `MCP_OAUTH_SECRET_KEY` set, HS256 with that secret replaces them (seed
compatibility); a symmetric key is never published.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

Jwk = dict[str, str]


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str
    private: ec.EllipticCurvePrivateKey | bytes
    public: ec.EllipticCurvePublicKey | bytes
    created_at: int
    retired_at: int | None = None

    def jwk(self) -> Jwk | None:
        if not isinstance(self.public, ec.EllipticCurvePublicKey):
            return None
        return {**_ec_jwk(self.public), "kid": self.kid, "use": "sig", "alg": self.algorithm}


@dataclass(frozen=True)
class KeyRing:
    active: SigningKey
    keys: tuple[SigningKey, ...]

    def find(self, kid: str) -> SigningKey | None:
        return next((k for k in self.keys if k.kid == kid), None)

    def jwks(self) -> dict[str, list[Jwk]]:
        return {"keys": [jwk for k in self.keys if (jwk := k.jwk()) is not None]}


def hs256_ring(secret: str) -> KeyRing:
    raw = secret.encode()
    kid = "hs-" + _b64(hashlib.sha256(b"memory-gateway kid\x00" + raw).digest()[:12])
    key = SigningKey(kid=kid, algorithm="HS256", private=raw, public=raw, created_at=0)
    return KeyRing(active=key, keys=(key,))


def load_or_create(directory: Path, *, now: float | None = None) -> KeyRing:
    """The ES256 key ring in `directory`, with a first key made if there is none.

    Replicas starting together on a shared state directory take a lock, so exactly one
    of them makes the first key and the others load it.
    """
    ring = _load(directory)
    if ring is not None:
        return ring
    with _locked(directory):
        if _load(directory) is None:
            _rotate(directory, now=now, keep_seconds=0)
    loaded = _load(directory)
    assert loaded is not None
    return loaded


def rotate(directory: Path, *, now: float | None = None, keep_seconds: int = 0) -> SigningKey:
    """Add a new signing key; retire the old ones and drop those retired long enough ago.

    `keep_seconds` is how long a retired key must stay published: the longest lifetime of
    a token it may have signed.
    """
    with _locked(directory):
        return _rotate(directory, now=now, keep_seconds=keep_seconds)


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _rotate(directory: Path, *, now: float | None, keep_seconds: int) -> SigningKey:
    stamp = int(time.time() if now is None else now)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = ec.generate_private_key(ec.SECP256R1())
    kid = thumbprint(_ec_jwk(private.public_key()))
    _write_private(directory / f"{kid}.pem", private)
    entries = [
        {**e, "retired_at": e.get("retired_at") or stamp}
        for e in _read_index(directory)
        if not e.get("retired_at") or stamp - int(e["retired_at"]) < keep_seconds
    ]
    entries.append({"kid": kid, "created_at": stamp, "retired_at": None})
    _write_index(directory, entries)
    _prune_files(directory, {str(e["kid"]) for e in entries})
    return _load_key(directory, entries[-1])


def thumbprint(jwk: Jwk) -> str:
    """RFC 7638 JWK thumbprint of an EC public key."""
    canonical = json.dumps(
        {k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True
    )
    return _b64(hashlib.sha256(canonical.encode()).digest())


def _load(directory: Path) -> KeyRing | None:
    entries = _read_index(directory)
    if not entries:
        return None
    keys = tuple(_load_key(directory, e) for e in entries)
    active = next((k for k in reversed(keys) if k.retired_at is None), keys[-1])
    return KeyRing(active=active, keys=keys)


def _load_key(directory: Path, entry: dict[str, Any]) -> SigningKey:
    kid = str(entry["kid"])
    private = serialization.load_pem_private_key((directory / f"{kid}.pem").read_bytes(), None)
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise ValueError(f"key {kid} is not an EC private key")
    retired = entry.get("retired_at")
    return SigningKey(
        kid=kid,
        algorithm="ES256",
        private=private,
        public=private.public_key(),
        created_at=int(entry["created_at"]),
        retired_at=int(retired) if retired else None,
    )


def _read_index(directory: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads((directory / "keys.json").read_text())
    except FileNotFoundError:
        return []
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, list):
        raise ValueError(f"{directory / 'keys.json'} is not a key index")
    return [k for k in keys if isinstance(k, dict)]


def _write_index(directory: Path, entries: list[dict[str, Any]]) -> None:
    _atomic_write(directory / "keys.json", json.dumps({"keys": entries}, indent=2).encode())


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _atomic_write(path, pem)


def _atomic_write(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def _prune_files(directory: Path, keep: set[str]) -> None:
    for pem in directory.glob("*.pem"):
        if pem.stem not in keep:
            pem.unlink(missing_ok=True)


def _ec_jwk(public: ec.EllipticCurvePublicKey) -> Jwk:
    numbers = public.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64(numbers.x.to_bytes(32, "big")),
        "y": _b64(numbers.y.to_bytes(32, "big")),
    }


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
