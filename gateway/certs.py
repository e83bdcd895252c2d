"""Development certificates: a local CA and a server certificate it signs.

`ensure_dev_certs(directory)` leaves four files in `directory`:

    dev-ca.pem, dev-ca.key     the CA (kept across runs so clients trust it once)
    server.pem, server.key     the server certificate and its key

The CA is reused while it is valid; the server certificate is issued again when it is
missing, expires within `RENEW_BEFORE`, lacks a wanted subject alternative name or was
not signed by the current CA. Private keys are written with mode 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_SANS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1", "gateway")
CA_LIFETIME = dt.timedelta(days=3650)
SERVER_LIFETIME = dt.timedelta(days=397)
RENEW_BEFORE = dt.timedelta(days=30)
CLOCK_SKEW = dt.timedelta(minutes=5)

CA_CERT, CA_KEY = "dev-ca.pem", "dev-ca.key"
SERVER_CERT, SERVER_KEY = "server.pem", "server.key"

GeneralName = x509.DNSName | x509.IPAddress


@dataclass(frozen=True)
class DevCerts:
    ca_cert: Path
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class _Pair:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def ensure_dev_certs(directory: Path, extra_sans: Sequence[str] = ()) -> DevCerts:
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    wanted = san_names([*DEFAULT_SANS, *extra_sans])
    ca = _load_pair(directory / CA_CERT, directory / CA_KEY)
    if ca is None or not _ca_usable(ca, now):
        ca = _issue_ca(now)
        _write_pair(ca, directory / CA_CERT, directory / CA_KEY)
    server = _load_pair(directory / SERVER_CERT, directory / SERVER_KEY)
    if server is None or not _server_usable(server, ca, wanted, now):
        server = _issue_server(ca, wanted, now)
        _write_pair(server, directory / SERVER_CERT, directory / SERVER_KEY)
    return DevCerts(directory / CA_CERT, directory / SERVER_CERT, directory / SERVER_KEY)


def san_names(names: Iterable[str]) -> list[GeneralName]:
    """Parse host names and IP literals into SAN entries, keeping order, dropping repeats."""
    result: list[GeneralName] = []
    for raw in names:
        name = raw.strip().strip("[]")
        if not name:
            continue
        entry = _general_name(name)
        if entry not in result:
            result.append(entry)
    return result


def _general_name(name: str) -> GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name.lower())


def _load_pair(cert_path: Path, key_path: Path) -> _Pair | None:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or cert.public_key() != key.public_key():
        return None
    return _Pair(cert, key)


def _valid_at(cert: x509.Certificate, now: dt.datetime, margin: dt.timedelta) -> bool:
    return cert.not_valid_before_utc <= now and now + margin < cert.not_valid_after_utc


def _ca_usable(ca: _Pair, now: dt.datetime) -> bool:
    try:
        constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    # The CA must outlive a freshly issued server certificate.
    return constraints.value.ca and _valid_at(ca.cert, now, SERVER_LIFETIME)


def _server_usable(
    server: _Pair, ca: _Pair, wanted: Sequence[GeneralName], now: dt.datetime
) -> bool:
    try:
        server.cert.verify_directly_issued_by(ca.cert)
        sans = server.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    present = set(sans.value)
    return _valid_at(server.cert, now, RENEW_BEFORE) and all(n in present for n in wanted)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "memory-gateway development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _issue_ca(now: dt.datetime) -> _Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"memory-gateway dev CA ({socket.gethostname()})"[:64])
    usage = x509.KeyUsage(
        digital_signature=True, key_cert_sign=True, crl_sign=True,
        content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, encipher_only=False, decipher_only=False,
    )  # fmt: skip
    cert = (
        _builder(name, name, key.public_key(), now, CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )
    return _Pair(cert, key)


def _issue_server(ca: _Pair, sans: Sequence[GeneralName], now: dt.datetime) -> _Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(
        digital_signature=True, key_cert_sign=False, crl_sign=False,
        content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, encipher_only=False, decipher_only=False,
    )  # fmt: skip
    cert = (
        _builder(_name("memory-gateway"), ca.cert.subject, key.public_key(), now, SERVER_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return _Pair(cert, key)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    now: dt.datetime,
    lifetime: dt.timedelta,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _write_pair(pair: _Pair, cert_path: Path, key_path: Path) -> None:
    key_pem = pair.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Each file is replaced atomically, the pair is not: gateway.tls keeps serving the old
    # pair until the two files match again.
    _atomic_write(key_path, key_pem, 0o600)
    _atomic_write(cert_path, pair.cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
