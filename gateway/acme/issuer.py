"""What the manager needs from an ACME client, without importing the `acme` library.

The version check runs before `gateway.acme.client` (the fence around the library) is
imported, so an unsupported or broken library stops start-up with one line.
"""

from __future__ import annotations

import datetime
import importlib.metadata
from dataclasses import dataclass
from typing import Protocol

from gateway.errors import InternalError
from gateway.settings import SettingsError

SUPPORTED_VERSIONS = ((5, 9), (6, 0))  # tested with 5.9; the lower bound is inclusive
ORDER_DEADLINE = datetime.timedelta(seconds=90)


class AcmeError(InternalError):
    """An ACME exchange failed; the message says what and where, in one line."""


class UnsupportedAcmeLibrary(SettingsError):
    """The installed acme library is outside the tested range (start-up fails with this)."""


def check_library() -> str:
    """The acme version; raise with one clear line when it is not one this was tested with."""
    try:
        version = importlib.metadata.version("acme")
    except importlib.metadata.PackageNotFoundError:
        raise UnsupportedAcmeLibrary("MCP_ACME_DOMAINS needs the acme library") from None
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    low, high = SUPPORTED_VERSIONS
    if not low <= parts < high:
        raise UnsupportedAcmeLibrary(
            f"the acme library {version} is not supported: memory-gateway needs "
            f"acme>={'.'.join(map(str, low))},<{'.'.join(map(str, high))}"
        )
    return version


@dataclass(frozen=True)
class Issued:
    chain_pem: bytes
    key_pem: bytes


class Issuer(Protocol):
    directory_url: str

    def obtain(self, domains: tuple[str, ...]) -> Issued:
        """A new certificate and key for `domains` (blocking; raises AcmeError)."""

    def renewal_info(self, chain_pem: bytes) -> tuple[datetime.datetime | None, datetime.datetime]:
        """ARI: when to renew (None without ARI) and when to ask again, UTC."""
