"""Development certificates: contents, reuse rules, and a real handshake with the dev CA."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.certs import DevCerts, ensure_dev_certs
from gateway.tls import ReloadingTLS
from tests.test_tls import ECHO_APP, client_context, connect, http_get, running


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(path: Path) -> set[str]:
    extension = load(path).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return {str(name.value) for name in extension.value}


@pytest.fixture
def certs(tmp_path: Path) -> DevCerts:
    return ensure_dev_certs(tmp_path / "certs", extra_sans=["memory.example.test", "10.1.2.3"])


def test_server_certificate_names_and_signature(certs: DevCerts) -> None:
    assert sans(certs.server_cert) == {
        "localhost", "gateway", "memory.example.test",
        str(ipaddress.ip_address("127.0.0.1")), str(ipaddress.ip_address("::1")),
        str(ipaddress.ip_address("10.1.2.3")),
    }  # fmt: skip
    server, ca = load(certs.server_cert), load(certs.ca_cert)
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_private_keys_are_owner_only(certs: DevCerts) -> None:
    for key in (certs.server_key, certs.ca_cert.with_name("dev-ca.key")):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1", "gateway", "memory.example.test"])
def test_handshake_verifies_against_the_dev_ca(certs: DevCerts, hostname: str) -> None:
    client = client_context(cafile=certs.ca_cert)
    with (
        running(ECHO_APP, ReloadingTLS(certs.server_cert, certs.server_key)) as server,
        connect(server.port or 0, client, hostname=hostname) as tls,
    ):
        assert b'"scheme":"https"' in http_get(tls, "/healthz")


def test_unknown_name_fails_verification(certs: DevCerts) -> None:
    client = client_context(cafile=certs.ca_cert)
    tls = ReloadingTLS(certs.server_cert, certs.server_key)
    with (
        running(ECHO_APP, tls) as server,
        pytest.raises(ssl.SSLCertVerificationError),
        connect(server.port or 0, client, "other.test"),
    ):
        pass


def test_second_run_changes_nothing(certs: DevCerts, tmp_path: Path) -> None:
    before = {p: p.read_bytes() for p in (tmp_path / "certs").iterdir()}
    ensure_dev_certs(tmp_path / "certs", extra_sans=["memory.example.test", "10.1.2.3"])
    assert {p: p.read_bytes() for p in (tmp_path / "certs").iterdir()} == before


def test_new_name_reissues_the_server_certificate_with_the_same_ca(
    certs: DevCerts, tmp_path: Path
) -> None:
    ca_before, server_before = certs.ca_cert.read_bytes(), load(certs.server_cert)
    again = ensure_dev_certs(tmp_path / "certs", extra_sans=["another.test"])
    assert again.ca_cert.read_bytes() == ca_before
    assert "another.test" in sans(again.server_cert)
    assert load(again.server_cert).serial_number != server_before.serial_number
    load(again.server_cert).verify_directly_issued_by(load(again.ca_cert))


def test_expiring_server_certificate_is_reissued(certs: DevCerts, tmp_path: Path) -> None:
    ca_key = serialization.load_pem_private_key(
        certs.ca_cert.with_name("dev-ca.key").read_bytes(), password=None
    )
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    old = load(certs.server_cert)
    now = dt.datetime.now(dt.UTC)
    soon = (
        x509.CertificateBuilder()
        .subject_name(old.subject).issuer_name(old.issuer).public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value,
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    certs.server_cert.write_bytes(soon.public_bytes(serialization.Encoding.PEM))
    ensure_dev_certs(tmp_path / "certs", extra_sans=["memory.example.test", "10.1.2.3"])
    renewed = load(certs.server_cert)
    assert renewed.not_valid_after_utc > now + dt.timedelta(days=300)


def test_lost_ca_key_makes_a_new_ca_and_a_server_certificate_it_signs(
    certs: DevCerts, tmp_path: Path
) -> None:
    old_ca = certs.ca_cert.read_bytes()
    certs.ca_cert.with_name("dev-ca.key").unlink()
    again = ensure_dev_certs(tmp_path / "certs")
    assert again.ca_cert.read_bytes() != old_ca
    load(again.server_cert).verify_directly_issued_by(load(again.ca_cert))


def test_mismatched_server_key_is_replaced(certs: DevCerts, tmp_path: Path) -> None:
    stray = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    certs.server_key.write_bytes(stray)
    again = ensure_dev_certs(tmp_path / "certs")
    key = serialization.load_pem_private_key(again.server_key.read_bytes(), password=None)
    assert load(again.server_cert).public_key() == key.public_key()
