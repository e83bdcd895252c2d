"""SIGTERM drains: in-flight requests finish, open event streams end cleanly (a complete
chunked response, not a reset), and the process exits within MCP_GATEWAY_DRAIN_SECONDS."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.ops.support import API_KEY, start_gateway
from tests.proxy.conftest import Server, start_upstream

KEY = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def upstream() -> Iterator[Server]:
    server = start_upstream()
    yield server
    server.stop()


def test_sigterm_drains_a_slow_response_and_open_streams_and_exits_in_time(
    tmp_path: Path, upstream: Server
) -> None:
    gateway = start_gateway(tmp_path, upstream.url, {"MCP_GATEWAY_DRAIN_SECONDS": "10"})
    results: dict[str, object] = {}
    streaming = threading.Barrier(3, timeout=10)

    def slow(name: str, method: str) -> None:
        # A chunked body takes the ASGI path (a small one with a length the fast path).
        body = iter([b"{}"]) if method == "POST" else None
        try:
            response = httpx.request(method, f"{gateway.url}/api/slow", params={"delay": "5"},
                                     headers=KEY, content=body, timeout=20)  # fmt: skip
            results[name] = (response.status_code, response.content)
        except httpx.HTTPError as exc:
            results[name] = exc

    def stream(name: str, method: str) -> None:
        body = iter([b"{}"]) if method == "POST" else None
        events = b""
        try:
            with httpx.stream(method, f"{gateway.url}/api/stall", params={"delay": "60"},
                              headers=KEY, content=body, timeout=20) as response:  # fmt: skip
                for chunk in response.iter_raw():
                    if not events:
                        streaming.wait()
                    events += chunk
            results[name] = (response.status_code, events)
        except httpx.HTTPError as exc:
            results[name] = exc

    threads = [
        threading.Thread(target=slow, args=("slow-fast", "GET")),
        threading.Thread(target=slow, args=("slow-asgi", "POST")),
        threading.Thread(target=stream, args=("stream-fast", "GET")),
        threading.Thread(target=stream, args=("stream-asgi", "POST")),
    ]
    for thread in threads:
        thread.start()
    streaming.wait()  # both streams have their first event; the slow ones are in flight
    time.sleep(0.5)
    signalled = time.monotonic()
    gateway.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{gateway.url}/healthz", timeout=2)  # no longer accepting
    code = gateway.proc.wait(15)
    took = time.monotonic() - signalled
    for thread in threads:
        thread.join(10)

    # uvicorn re-raises the signal it captured once it has shut down: exit by SIGTERM.
    assert code in (0, -signal.SIGTERM), gateway.log()
    assert took < 10, took
    assert took > 3.5, took  # it waited for the 5-second responses
    assert results["slow-fast"] == (200, b"{}")
    assert results["slow-asgi"] == (200, b"{}")
    # The streams ended cleanly: the whole event, then the end of the chunked body.
    assert results["stream-fast"] == (200, b"data: first\n\n"), results
    assert results["stream-asgi"] == (200, b"data: first\n\n"), results
    lines = [line for line in gateway.log().splitlines() if '"/api/stall"' in line]
    assert len(lines) == 2
    assert all('"status":200' in line for line in lines)


def test_drain_limit_cuts_what_does_not_finish(tmp_path: Path, upstream: Server) -> None:
    gateway = start_gateway(tmp_path, upstream.url, {"MCP_GATEWAY_DRAIN_SECONDS": "2"})
    outcome: list[object] = []

    def slow() -> None:
        try:
            outcome.append(httpx.get(f"{gateway.url}/api/slow", params={"delay": "30"},
                                     headers=KEY, timeout=40).status_code)  # fmt: skip
        except httpx.HTTPError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.5)
    signalled = time.monotonic()
    gateway.proc.send_signal(signal.SIGTERM)
    code = gateway.proc.wait(15)
    took = time.monotonic() - signalled
    thread.join(10)
    assert code in (0, -signal.SIGTERM)
    assert took < 2.5, took
    assert outcome
    assert outcome[0] != 200
