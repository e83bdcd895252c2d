"""Keep a certificate from ACME in the state directory and the TLS listener serving it.

Start-up writes a self-signed placeholder when there is no certificate yet, so the HTTPS
listener (and the HTTP listener that answers HTTP-01) can start at once. A background task
then obtains the certificate, renews it when due (`schedule.plan`), and after each write
asks the listener's `ReloadingTLS` to load it: new handshakes get the new certificate,
open connections keep theirs. A failure is logged, reported to `AcmeEvents`, retried with
backoff, and leaves the old certificate serving.

Replicas sharing the state directory: the one that gets the directory's lock obtains the
certificate, the others see the new file (here and through the listener's file watcher).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from gateway.acme.events import AcmeEvents
from gateway.acme.issuer import AcmeError, Issuer
from gateway.acme.schedule import Plan, StoredCertificate, backoff, plan, seconds_until
from gateway.acme.store import AcmeStore

log = logging.getLogger("gateway.acme")
A = TypeVar("A")
R = TypeVar("R")

MAX_SLEEP = 3600.0  # look again at least hourly: clocks jump, files change
LOCK_WAIT = 5.0  # another replica holds the lock: look again this soon


async def in_daemon_thread(function: Callable[[A], R], argument: A) -> R:
    """`function(argument)` in a thread of its own that does not hold up the process's exit.

    The ACME library blocks (each request up to its timeout, an order up to 90 s); in the
    default executor a shutdown would wait for it, here a cancelled wait just lets go.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[R] = loop.create_future()

    def work() -> None:
        try:
            result = function(argument)
        except BaseException as exc:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(_reject, future, exc)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, future, result)

    threading.Thread(target=work, name="acme", daemon=True).start()
    return await future


def _resolve(future: asyncio.Future[R], result: R) -> None:
    if not future.done():
        future.set_result(result)


def _reject(future: asyncio.Future[R], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


class Reloadable(Protocol):
    def reload(self) -> bool: ...

    def check(self) -> bool | None: ...


class CertificateManager:
    def __init__(
        self,
        store: AcmeStore,
        issuer: Issuer,
        domains: tuple[str, ...],
        events: AcmeEvents,
        *,
        retry_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store, self.issuer, self.domains, self.events = store, issuer, domains, events
        self.retry_seconds = retry_seconds
        self._clock, self._sleep = clock, sleep
        self._tls: Reloadable | None = None
        self._failures = 0
        self._waiting = False  # another replica held the lock last time we looked
        self._ari: tuple[int, datetime.datetime | None, datetime.datetime] | None = None

    def prepare(self) -> None:
        """Make the state directory and, if needed, the placeholder to start listening with."""
        self.store.prepare()
        if self.store.ensure_placeholder(self.domains):
            log.info(
                "ACME: no certificate for %s yet; serving a placeholder until one is obtained",
                ", ".join(self.domains),
            )
        failures, not_before = self.store.read_backoff()
        if not_before > self._clock():
            log.warning(
                "ACME: %d failed attempt(s) before this start; the next one in %.0f s "
                "(delete %s to try at once)",
                failures, not_before - self._clock(), self.store.backoff_path,
            )  # fmt: skip

    def attach(self, tls: Reloadable) -> None:
        self._tls = tls
        self._report_serving()

    def challenge(self, token: str) -> bytes | None:
        """The HTTP-01 key authorization for `token`, for the plain-HTTP listener."""
        return self.store.read_challenge(token)

    async def run(self) -> None:
        while True:
            try:
                delay = await self.step()
            except Exception:  # a bug must not end renewals: log it, back off, go on
                log.exception("ACME: certificate manager error")
                self._failures += 1
                delay = backoff(self._failures, self.retry_seconds)
            await self._sleep(delay)

    async def step(self) -> float:
        """Obtain or renew if due; return the seconds to wait before looking again."""
        self._pick_up_changes()
        stored = self.store.read_certificate()
        decision = await self._plan(stored)
        now = self._now()
        if decision.due > now:
            return min(MAX_SLEEP, max(1.0, seconds_until(decision.due, now)))
        wait = self._backing_off()
        if wait > 0:
            return wait
        with self.store.lock() as held:
            if not held:
                level = logging.DEBUG if self._waiting else logging.INFO
                log.log(level, "ACME: another replica is obtaining the certificate; waiting")
                self._waiting = True
                return min(LOCK_WAIT, self.retry_seconds)
            self._waiting = False
            stored = self.store.read_certificate()  # it may have done so meanwhile
            decision = await self._plan(stored)
            if decision.due > self._now():
                self._pick_up_changes()
                return 1.0
            wait = self._backing_off()
            return wait if wait > 0 else await self._obtain(stored, decision)

    def _backing_off(self) -> float:
        """Seconds left of the backoff after the last failure, by any replica."""
        failures, not_before = self.store.read_backoff()
        self._failures = failures
        return min(MAX_SLEEP, max(0.0, not_before - self._clock()))

    async def _obtain(self, stored: StoredCertificate | None, decision: Plan) -> float:
        renewal = stored is not None and not stored.placeholder
        names = ", ".join(self.domains)
        log.info("ACME: requesting a certificate for %s (%s)", names, decision.reason)
        started = time.monotonic()
        try:
            issued = await in_daemon_thread(self.issuer.obtain, self.domains)
        except AcmeError as exc:
            self._failures += 1
            delay = backoff(self._failures, self.retry_seconds)
            self.store.write_backoff(self._failures, self._clock() + delay)
            serving = f"serial {stored.serial:x}" if renewal and stored else "the placeholder"
            log.error(
                "ACME: could not obtain a certificate for %s (attempt %d, next in %.0f s; "
                "still serving %s): %s",
                names, self._failures, delay, serving, exc,
            )  # fmt: skip
            self.events.failed(self.domains, str(exc))
            return delay
        seconds = time.monotonic() - started
        self.store.write_certificate(issued.chain_pem, issued.key_pem, self.issuer.directory_url)
        self._failures = 0
        self.store.write_backoff(0, 0.0)
        self._ari = None
        if self._tls is not None:
            self._tls.reload()
        fresh = self.store.read_certificate()
        log.info(
            "ACME: certificate for %s obtained in %.2f s: serial %x, valid until %s",
            names, seconds, fresh.serial if fresh else 0,
            fresh.not_after.isoformat() if fresh else "?",
        )  # fmt: skip
        self.events.issued(self.domains, renewal=renewal, seconds=seconds)
        self._report_serving()
        return 1.0

    async def _plan(self, stored: StoredCertificate | None) -> Plan:
        now = self._now()
        ari = None
        if stored is not None and not stored.placeholder and stored.not_after > now:
            ari = await self._ari_time(stored, now)
        return plan(stored, self.domains, self.issuer.directory_url, now, ari)

    async def _ari_time(
        self, stored: StoredCertificate, now: datetime.datetime
    ) -> datetime.datetime | None:
        if self._ari is not None and self._ari[0] == stored.serial and self._ari[2] > now:
            return self._ari[1]
        try:
            pem = self.store.certificate_pem()
            when, ask_again = await in_daemon_thread(self.issuer.renewal_info, pem)
        except (AcmeError, OSError, ValueError) as exc:
            log.warning("ACME: renewal information unavailable, using the lifetime rule: %s", exc)
            when, ask_again = None, now + datetime.timedelta(hours=1)
        self._ari = (stored.serial, when, ask_again)
        return when

    def _pick_up_changes(self) -> None:
        if self._tls is not None and self._tls.check():
            self._report_serving()

    def _report_serving(self) -> None:
        stored = self.store.read_certificate()
        if stored is not None and not stored.placeholder:
            self.events.serving(stored.serial, stored.not_after.timestamp())

    def _now(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self._clock(), datetime.UTC)
