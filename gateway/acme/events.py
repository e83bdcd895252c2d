"""What the certificate manager reports, for logs, metrics and tests.

`AcmeEvents` is the hook; `AcmeCounters` is the default, in-memory implementation. The
composition root passes one in (`gateway.server.serve(settings, acme_events=...)`). A
metrics exporter either implements the three methods, or gives `AcmeCounters` a
`forward` callable that receives one event name each time: `issued`, `renewed` or
`failed` (e.g. `AcmeCounters(forward=metrics.certificate)` for a labelled counter).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


class AcmeEvents(Protocol):
    def issued(self, domains: tuple[str, ...], *, renewal: bool, seconds: float) -> None:
        """A certificate was obtained (`renewal`: one was already served) in `seconds`."""

    def failed(self, domains: tuple[str, ...], error: str) -> None:
        """An attempt to obtain a certificate failed; the old one keeps serving."""

    def serving(self, serial: int, not_after: float) -> None:
        """The listener now serves this certificate (`not_after`: Unix time)."""


@dataclass
class AcmeCounters:
    """Counts of what happened, safe to read from any thread."""

    issued_total: int = 0
    renewed_total: int = 0
    failures_total: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_issue_seconds: float | None = None
    serving_serial: int | None = None
    serving_not_after: float | None = None
    forward: Callable[[str], None] | None = field(default=None, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def issued(self, domains: tuple[str, ...], *, renewal: bool, seconds: float) -> None:
        with self._lock:
            self.issued_total += 1
            self.renewed_total += 1 if renewal else 0
            self.consecutive_failures = 0
            self.last_issue_seconds = seconds
        if self.forward is not None:
            self.forward("renewed" if renewal else "issued")

    def failed(self, domains: tuple[str, ...], error: str) -> None:
        with self._lock:
            self.failures_total += 1
            self.consecutive_failures += 1
            self.last_error = error
        if self.forward is not None:
            self.forward("failed")

    def serving(self, serial: int, not_after: float) -> None:
        with self._lock:
            self.serving_serial, self.serving_not_after = serial, not_after
