"""When to obtain or renew a certificate: pure rules, no I/O.

A certificate is renewed when a third of its lifetime is left (Let's Encrypt's own advice,
and what certbot does for 90-day certificates: 30 days before expiry), or inside the
renewal window the CA suggests through ACME Renewal Information (RFC 9773) when it offers
one. Failures back off exponentially, capped, so a CA's rate limits are not burnt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

RENEW_WHEN_LEFT = 1 / 3
BACKOFF_CAP_SECONDS = 3600.0


@dataclass(frozen=True)
class StoredCertificate:
    """What the manager needs to know about the certificate on disk."""

    domains: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    serial: int
    directory: str | None  # the ACME directory that issued it; None for a placeholder
    placeholder: bool


@dataclass(frozen=True)
class Plan:
    due: datetime
    reason: str


def renewal_time(not_before: datetime, not_after: datetime) -> datetime:
    """The moment a third of the validity period is left."""
    return not_after - (not_after - not_before) * RENEW_WHEN_LEFT


def plan(
    stored: StoredCertificate | None,
    domains: Sequence[str],
    directory: str,
    now: datetime,
    ari_time: datetime | None = None,
) -> Plan:
    """When the next certificate is needed and why. `due <= now` means: get one now."""
    if stored is None:
        return Plan(now, "no certificate yet")
    if stored.placeholder:
        return Plan(now, "only the placeholder certificate is served")
    if set(stored.domains) != set(domains):
        return Plan(now, f"the domains changed (certificate has {', '.join(stored.domains)})")
    if stored.directory != directory:
        return Plan(now, f"the ACME directory changed (issued by {stored.directory})")
    if stored.not_after <= now:
        return Plan(now, "the certificate expired")
    if ari_time is not None:
        return Plan(min(ari_time, stored.not_after), "inside the CA's renewal window (ARI)")
    return Plan(renewal_time(stored.not_before, stored.not_after), "a third of its lifetime left")


def backoff(failures: int, base: float, cap: float = BACKOFF_CAP_SECONDS) -> float:
    """Seconds to wait after the `failures`-th consecutive failure: base, 2 base, 4 base..."""
    if failures <= 0:
        return 0.0
    return float(min(cap, base * 2.0 ** min(failures - 1, 32)))


def seconds_until(moment: datetime, now: datetime) -> float:
    return max(0.0, (moment - now) / timedelta(seconds=1))
