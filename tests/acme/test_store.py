import os
import stat
from pathlib import Path

import pytest
import trustme

from gateway.acme.issuer import SUPPORTED_VERSIONS, check_library
from gateway.acme.store import AcmeStore
from gateway.settings import SettingsError
from gateway.tls import ReloadingTLS


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_placeholder_then_certificate_in_one_file(tmp_path: Path) -> None:
    store = AcmeStore(tmp_path)
    store.prepare()
    assert _mode(store.root) == 0o700
    assert store.ensure_placeholder(("memory.test",))
    assert not store.ensure_placeholder(("memory.test",))  # kept, not rewritten
    placeholder = store.read_certificate()
    assert placeholder is not None
    assert placeholder.placeholder
    assert placeholder.domains == ("memory.test",)
    tls = ReloadingTLS(store.certificate_path, store.certificate_path)  # key in the same file

    ca = trustme.CA()
    leaf = ca.issue_cert("memory.test")
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    store.write_certificate(chain, leaf.private_key_pem.bytes(), "https://acme.test/dir")
    assert _mode(store.certificate_path) == 0o600
    stored = store.read_certificate()
    assert stored is not None
    assert not stored.placeholder
    assert stored.directory == "https://acme.test/dir"
    assert tls.check() is True
    assert tls.info.serial == stored.serial
    assert not [p for p in store.root.iterdir() if p.name.endswith(".tmp")]


def test_write_refuses_a_chain_that_does_not_parse(tmp_path: Path) -> None:
    store = AcmeStore(tmp_path)
    store.prepare()
    with pytest.raises(ValueError, match="PEM"):
        store.write_certificate(b"not a certificate", b"", "https://acme.test/dir")
    assert not store.certificate_path.exists()


def test_lock_is_exclusive(tmp_path: Path) -> None:
    store = AcmeStore(tmp_path)
    store.prepare()
    with store.lock() as held:
        assert held
        with store.lock() as other:  # a second open file description: another replica
            assert not other
    with store.lock() as again:
        assert again


def test_challenge_tokens(tmp_path: Path) -> None:
    store = AcmeStore(tmp_path)
    store.prepare()
    store.publish_challenge("tok_en-1", "tok_en-1.thumbprint")
    assert store.read_challenge("tok_en-1") == b"tok_en-1.thumbprint"
    assert _mode(store.root / "challenges" / "tok_en-1") == 0o600
    assert store.read_challenge("../certificate.pem") is None
    assert store.read_challenge("nope") is None
    with pytest.raises(ValueError, match="unexpected HTTP-01 token"):
        store.publish_challenge("../x", "y")
    store.withdraw_challenge("tok_en-1")
    assert store.read_challenge("tok_en-1") is None


def test_accounts_are_kept_per_directory(tmp_path: Path) -> None:
    store = AcmeStore(tmp_path)
    store.prepare()
    store.write_account("https://one.test/dir", {"url": "u1", "key": "{}"})
    assert store.read_account("https://one.test/dir") == {"url": "u1", "key": "{}"}
    assert store.read_account("https://two.test/dir") is None
    for path in (store.root / "accounts").iterdir():
        assert _mode(path) == 0o600
    assert os.stat(store.root / "accounts").st_mode & 0o077 == 0


def test_the_acme_library_version_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_library()  # the installed one is supported
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "version", lambda _name: "2.11.0")
    low, high = (".".join(map(str, v)) for v in SUPPORTED_VERSIONS)
    with pytest.raises(SettingsError, match=rf"2\.11\.0 is not supported.*acme>={low},<{high}"):
        check_library()


def test_stale_challenge_tokens_are_dropped_at_start(tmp_path: Path) -> None:
    store = AcmeStore(tmp_path)
    store.prepare()
    store.publish_challenge("old", "old.x")
    store.publish_challenge("new", "new.x")
    old = store.root / "challenges" / "old"
    os.utime(old, (1_000_000, 1_000_000))
    AcmeStore(tmp_path).prepare()
    assert not old.exists()
    assert store.read_challenge("new") == b"new.x"


def test_placeholder_waits_for_a_replica_holding_the_lock(tmp_path: Path) -> None:
    store = AcmeStore(tmp_path)
    store.prepare()
    with store.lock() as held:
        assert held
        # The other replica writes its certificate while holding the lock.
        ca = trustme.CA()
        leaf = ca.issue_cert("memory.test")
        chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
        store.write_certificate(chain, leaf.private_key_pem.bytes(), "https://acme.test/dir")
    assert not AcmeStore(tmp_path).ensure_placeholder(("memory.test",))


def test_backoff_is_shared_through_the_directory(tmp_path: Path) -> None:
    store = AcmeStore(tmp_path)
    store.prepare()
    assert store.read_backoff() == (0, 0.0)
    store.write_backoff(3, 1_900_000_000.5)
    assert AcmeStore(tmp_path).read_backoff() == (3, 1_900_000_000.5)
    assert _mode(store.backoff_path) == 0o600
    store.write_backoff(0, 0.0)
    assert not store.backoff_path.exists()
    store.backoff_path.write_text("{not json")
    assert store.read_backoff() == (0, 0.0)
