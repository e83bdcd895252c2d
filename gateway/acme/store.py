"""The ACME state in the state directory: account keys, the certificate, challenge tokens.

Layout under `<state dir>/acme/` (directory 0700, every file 0600, written atomically):

- `accounts/<hash of the directory URL>.json`: the account key (JWK) and account URL
- `certificate.pem`: the served chain followed by its private key, one file so a reader
  never sees a new certificate with an old key
- `certificate.json`: which ACME directory issued it
- `challenges/<token>`: HTTP-01 key authorizations, readable by every replica that shares
  the directory, so whichever one the CA reaches can answer
- `lock`: held (flock) by the replica that is obtaining a certificate
- `backoff.json`: consecutive failures and the time before which no replica retries
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.acme.schedule import StoredCertificate

PLACEHOLDER_ORG = "memory-gateway ACME placeholder"
TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")  # base64url, RFC 8555 section 8.3
MAX_KEY_AUTHORIZATION = 512
MAX_STATE_FILE = 256 * 1024
STALE_CHALLENGE_SECONDS = 3600
LOCK_TIMEOUT = 180.0  # an order holding the lock ends within its own deadlines


class AcmeStore:
    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "acme"
        self.certificate_path = self.root / "certificate.pem"
        self._meta_path = self.root / "certificate.json"
        self._challenges = self.root / "challenges"
        self._accounts = self.root / "accounts"
        self.backoff_path = self.root / "backoff.json"

    def prepare(self) -> None:
        for directory in (self.root, self._challenges, self._accounts):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._drop_stale_challenges()

    def _drop_stale_challenges(self) -> None:
        """Tokens left by a process that died mid-order (a live order is minutes old)."""
        cutoff = time.time() - STALE_CHALLENGE_SECONDS
        for path in self._challenges.iterdir():
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()

    # The certificate

    def read_certificate(self) -> StoredCertificate | None:
        try:
            pem = _read(self.certificate_path)
        except FileNotFoundError:
            return None
        cert = x509.load_pem_x509_certificate(pem)
        try:
            meta = json.loads(_read(self._meta_path))
        except (OSError, ValueError):
            meta = {}
        organisations = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        placeholder = any(attr.value == PLACEHOLDER_ORG for attr in organisations)
        return StoredCertificate(
            domains=_dns_names(cert),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            serial=cert.serial_number,
            directory=None if placeholder else meta.get("directory"),
            placeholder=placeholder,
        )

    def certificate_pem(self) -> bytes:
        return _read(self.certificate_path)

    def write_certificate(self, chain_pem: bytes, key_pem: bytes, directory: str) -> None:
        """Replace the served pair in one rename; the TLS listener reloads from it."""
        x509.load_pem_x509_certificates(chain_pem)  # refuse to write what cannot be served
        _write_atomic(self._meta_path, json.dumps({"directory": directory}).encode())
        _write_atomic(self.certificate_path, chain_pem.rstrip(b"\n") + b"\n" + key_pem)

    def ensure_placeholder(self, domains: tuple[str, ...]) -> bool:
        """A self-signed certificate to listen with until the first one is obtained."""
        if self.certificate_path.exists():
            return False
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            with self.lock() as held:
                if self.certificate_path.exists():
                    return False
                if held:
                    _write_atomic(self.certificate_path, _placeholder_pem(domains))
                    return True
            if time.monotonic() > deadline:
                raise OSError(f"{self.root / 'lock'} stayed locked for {LOCK_TIMEOUT:.0f} s")
            time.sleep(0.1)

    # Locking between replicas that share the directory

    @contextlib.contextmanager
    def lock(self) -> Iterator[bool]:
        """Yield True while this process holds the lock, False if another one does."""
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    # HTTP-01 challenge tokens

    def publish_challenge(self, token: str, key_authorization: str) -> None:
        if not TOKEN.match(token) or len(key_authorization) > MAX_KEY_AUTHORIZATION:
            raise ValueError(f"unexpected HTTP-01 token {token[:32]!r}")
        _write_atomic(self._challenges / token, key_authorization.encode())

    def withdraw_challenge(self, token: str) -> None:
        if TOKEN.match(token):
            with contextlib.suppress(FileNotFoundError):
                (self._challenges / token).unlink()

    def read_challenge(self, token: str) -> bytes | None:
        if not TOKEN.match(token):
            return None
        try:
            with open(self._challenges / token, "rb") as file:
                value = file.read(MAX_KEY_AUTHORIZATION + 1)
        except OSError:
            return None
        return value if len(value) <= MAX_KEY_AUTHORIZATION else None

    # Backoff shared by the replicas, so N replicas do not make N times the attempts

    def read_backoff(self) -> tuple[int, float]:
        """(consecutive failures, Unix time before which nobody should try again)."""
        try:
            value = json.loads(_read(self.backoff_path))
            return int(value["failures"]), float(value["not_before"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0, 0.0

    def write_backoff(self, failures: int, not_before: float) -> None:
        if failures == 0:
            with contextlib.suppress(FileNotFoundError):
                self.backoff_path.unlink()
            return
        data = json.dumps({"failures": failures, "not_before": not_before}).encode()
        _write_atomic(self.backoff_path, data)

    # Accounts, one per ACME directory

    def read_account(self, directory: str) -> dict[str, Any] | None:
        try:
            value = json.loads(_read(self._account_path(directory)))
        except FileNotFoundError:
            return None
        return value if isinstance(value, dict) else None

    def write_account(self, directory: str, account: dict[str, Any]) -> None:
        _write_atomic(self._account_path(directory), json.dumps(account).encode())

    def forget_account(self, directory: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._account_path(directory).unlink()

    def _account_path(self, directory: str) -> Path:
        return self._accounts / f"{hashlib.sha256(directory.encode()).hexdigest()[:24]}.json"


def _read(path: Path) -> bytes:
    with open(path, "rb") as file:
        data = file.read(MAX_STATE_FILE + 1)
    if len(data) > MAX_STATE_FILE:
        raise ValueError(f"{path} is larger than {MAX_STATE_FILE} bytes")
    return data


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise


def _dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    return tuple(name.lower() for name in san.value.get_values_for_type(x509.DNSName))


def new_private_key_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _placeholder_pem(domains: tuple[str, ...]) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, PLACEHOLDER_ORG),
            x509.NameAttribute(NameOID.COMMON_NAME, domains[0]),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM) + key_pem
