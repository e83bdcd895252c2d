"""The AcmeEvents hook, passed in where the server is composed, sees what happens."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.acme import AcmeCounters
from gateway.server import serve
from gateway.settings import Settings
from tests.acme.dns import LoopbackDNS
from tests.acme.gateway_process import Listeners, acme_env, peer_certificate
from tests.acme.pebble import make_api_ca, pebble, require_pebble
from tests.ports import reserved_port

pytestmark = pytest.mark.pebble

NAME = "memory.test"


class InProcess:
    """`gateway.server.serve` on a loop in a thread, cancelled at the end."""

    def __init__(
        self, settings: Settings, events: AcmeCounters, listeners: Listeners | None = None
    ) -> None:
        self.settings, self.events = settings, events
        self.sockets = listeners.sockets if listeners is not None else []
        self.error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self.error = exc

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        server = asyncio.create_task(serve(self.settings, self.sockets, acme_events=self.events))
        stop = asyncio.create_task(self._stop.wait())
        await asyncio.wait([server, stop], return_when=asyncio.FIRST_COMPLETED)
        if server.done():
            server.result()  # a crash is the test's failure
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server

    def __enter__(self) -> InProcess:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=15)
        for sock in self.sockets:
            sock.close()
        assert not self._thread.is_alive()


def _wait(condition: object, timeout: float, what: str, server: InProcess) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.error is None, server.error
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def dns() -> Iterator[LoopbackDNS]:
    with LoopbackDNS([NAME]) as server:
        yield server


def test_events_count_failures_then_the_certificate(dns: LoopbackDNS, tmp_path: Path) -> None:
    binary = require_pebble()
    listeners = Listeners()  # served on as they are: no port race for the gateway's two
    (https_port, http_port), acme_port = listeners.ports, reserved_port()
    api = make_api_ca(tmp_path)
    env = acme_env(
        tmp_path / "state", f"https://127.0.0.1:{acme_port}/dir", api.ca_file, NAME,
        https_port, http_port,
    )  # fmt: skip
    events = AcmeCounters()
    with InProcess(Settings.from_env(env), events, listeners) as server:
        _wait(lambda: events.failures_total >= 1, 20, "a failure", server)
        assert events.last_error is not None
        assert "cannot reach the ACME server" in events.last_error
        assert events.issued_total == 0
        assert events.serving_serial is None  # the placeholder is not reported as served
        with pebble(
            binary, tmp_path / "pebble", http_port=http_port, dns_port=dns.port,
            api=api, listen_port=acme_port,
        ) as ca:  # fmt: skip
            _wait(lambda: events.issued_total == 1, 60, "the certificate", server)
            served = peer_certificate(https_port, NAME, ca.client_context())
        assert events.renewed_total == 0
        assert events.consecutive_failures == 0
        assert events.serving_serial == served.serial_number
        assert events.serving_not_after == served.not_valid_after_utc.timestamp()
        assert events.last_issue_seconds is not None
        assert events.last_issue_seconds > 0
