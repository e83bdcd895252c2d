"""`serve --workers 2`: one port, two processes, one gateway. Each step of a full OAuth
flow is sent on a connection that a chosen worker accepted (found from the request log's
`pid`), so register, authorize, token and the proxied call alternate between workers.
A revocation made on one worker is honoured by the other within a second, and the
supervisor's metrics listener shows both workers' requests."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.ops.support import Gateway, authorize, exchange, metric, register, start_gateway
from tests.proxy.conftest import Server, start_upstream
from tests.store.redis_server import redis_server, require_redis_server, unique_prefix


@pytest.fixture(scope="module")
def upstream() -> Iterator[Server]:
    server = start_upstream()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def workers(request: pytest.FixtureRequest, tmp_path: Path, upstream: Server) -> Iterator[Gateway]:
    if request.param == "sqlite":
        gw = start_gateway(tmp_path, upstream.url, {}, "--workers", "2")
        yield gw
        gw.stop()
        return
    with redis_server(require_redis_server(), tmp_path) as url:
        env = {"MCP_OAUTH_STORAGE": f"{url}?prefix={unique_prefix()}"}
        gw = start_gateway(tmp_path, upstream.url, env, "--workers", "2")
        yield gw
        gw.stop()


def served_by(gateway: Gateway, http: httpx.Client) -> int:
    """Send a probe on `http`'s connection; the worker pid that served it.

    The probe's path is unique, so its request-log line is found whichever worker's log
    buffer is flushed first (each worker flushes its own, on its own schedule).
    """
    path = f"/probe-{uuid.uuid4().hex}"
    assert http.get(path).status_code < 500
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in gateway.request_lines(0.05):
            if line["path"] == path:
                return int(str(line["pid"]))
        time.sleep(0.05)
    raise AssertionError("the probe was not logged")


def logged_steps(
    gateway: Gateway, expected: set[tuple[str, int]], seconds: float = 10
) -> set[tuple[object, object]]:
    """(path, pid) of the request-log lines so far, once `expected` are all there or
    `seconds` have passed: each worker flushes its own log buffer on its own schedule,
    and a loaded machine can hold one worker's flush back past a fixed wait."""
    deadline = time.monotonic() + seconds
    while True:
        steps = {(line["path"], line["pid"]) for line in gateway.request_lines(0.05)}
        if expected <= steps or time.monotonic() > deadline:
            return steps
        time.sleep(0.1)


class Connections:
    """Keep-alive connections, each pinned to the worker that accepted it."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.pinned: dict[int, httpx.Client] = {}

    def to(
        self, pid: int | None = None, *, other_than: int | None = None
    ) -> tuple[int, httpx.Client]:
        for _ in range(60):
            http = httpx.Client(base_url=self.gateway.url, timeout=10)
            worker = served_by(self.gateway, http)
            if (pid is None or worker == pid) and worker != other_than:
                self.pinned[worker] = http
                return worker, http
            http.close()
        raise AssertionError(f"no connection landed on worker {pid}")

    def close(self) -> None:
        for http in self.pinned.values():
            http.close()


def test_a_full_oauth_flow_across_two_workers(workers: Gateway) -> None:
    assert workers.proc.poll() is None
    connections = Connections(workers)
    try:
        first, a = connections.to()
        second, b = connections.to(other_than=first)
        assert first != second
        resource = f"{workers.url}/mcp"

        client_id = register(a)  # worker 1
        code, verifier = authorize(b, client_id, resource)  # worker 2
        tokens = exchange(a, client_id, code, verifier, resource)  # worker 1
        bearer = {"Authorization": f"Bearer {tokens.access_token}"}
        assert b.get("/api/memories", headers=bearer).status_code == 200  # worker 2
        assert a.get("/api/memories", headers=bearer).status_code == 200

        steps = logged_steps(workers, {
            ("/oauth/register", first), ("/oauth/authorize", second),
            ("/oauth/token", first), ("/api/memories", second),
        })  # fmt: skip
        assert ("/oauth/register", first) in steps
        assert ("/oauth/authorize", second) in steps
        assert ("/oauth/token", first) in steps
        assert ("/api/memories", second) in steps

        # A revocation on one worker reaches the other within a second.
        revoked = a.post("/oauth/revoke", data={"token": tokens.access_token,
                                                 "client_id": client_id})  # fmt: skip
        assert revoked.status_code == 200
        started, accepted = time.monotonic(), 2
        while b.get("/api/memories", headers=bearer).status_code != 401:
            accepted += 1
            assert time.monotonic() - started < 1.0, "worker 2 still accepts the token"
            time.sleep(0.05)

        # One scrape of the supervisor's listener sums both workers.
        text = workers.metrics()
        assert metric(text, "mcp_gateway_requests_total", route="oauth_token", status="200") == 1
        assert metric(text, "mcp_gateway_requests_total", route="rest", status="200") == accepted
        assert metric(text, "mcp_gateway_open_connections") >= 2
    finally:
        connections.close()

    signalled = time.monotonic()
    workers.proc.send_signal(signal.SIGTERM)
    assert workers.proc.wait(15) == 0
    assert time.monotonic() - signalled < 10


def test_a_worker_that_dies_is_replaced(workers: Gateway) -> None:
    import os

    connections = Connections(workers)
    try:
        pid, _ = connections.to()
    finally:
        connections.close()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if "exited with code" in workers.log() and "restarting" in workers.log():
            break
        time.sleep(0.2)
    assert "restarting" in workers.log()
    time.sleep(3)
    for _ in range(10):
        assert httpx.get(f"{workers.url}/healthz", timeout=5).status_code == 200


def test_workers_leave_when_the_supervisor_is_killed(workers: Gateway) -> None:
    import os

    connections = Connections(workers)
    try:
        first, _ = connections.to()
        second, _ = connections.to(other_than=first)
    finally:
        connections.close()
    workers.proc.kill()
    workers.proc.wait(5)
    deadline = time.monotonic() + 10
    alive = {first, second}
    while alive and time.monotonic() < deadline:
        for pid in list(alive):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                alive.discard(pid)
        time.sleep(0.1)
    assert not alive, f"workers {alive} outlived their supervisor"
