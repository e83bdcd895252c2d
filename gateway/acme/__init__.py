"""Certificates from ACME (RFC 8555): obtained, stored, renewed and served automatically.

`build_manager` is what the server's composition calls; the parts:
`schedule` (pure rules), `store` (state directory), `issuer` (what the manager needs from
a client, and the library version check), `client` (the fence around the `acme` library),
`manager` (the background task), `events` (the hook for logs and metrics).
"""

from __future__ import annotations

from gateway.acme.events import AcmeCounters, AcmeEvents
from gateway.acme.manager import CertificateManager
from gateway.settings import Settings

__all__ = ["AcmeCounters", "AcmeEvents", "CertificateManager", "build_manager"]


def build_manager(settings: Settings, events: AcmeEvents) -> CertificateManager:
    """The manager for `settings`; fails with one line on an unsupported acme library."""
    from gateway.acme.issuer import UnsupportedAcmeLibrary, check_library
    from gateway.acme.store import AcmeStore

    check_library()
    try:
        from gateway.acme.client import AcmeClient
    except ImportError as exc:
        raise UnsupportedAcmeLibrary(f"the acme library cannot be loaded: {exc}") from None
    store = AcmeStore(settings.state_dir)
    issuer = AcmeClient(settings.acme_directory, store, settings.acme_email, settings.acme_ca_file)
    return CertificateManager(
        store, issuer, settings.acme_domains, events, retry_seconds=settings.acme_retry_seconds
    )
