"""/readyz: 503 with the reason while the backend or Redis is down, 200 again once they
are back; /healthz (liveness) stays 200 throughout."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.ops.support import ROOT, Gateway, metric, start_gateway
from tests.ports import port_file, read_port_file
from tests.proxy.conftest import wait_listening
from tests.store.redis_server import require_redis_server, start_redis, start_redis_anywhere


def start_backend(port: int, db: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The backend on `port`; 0: the port it picks (read back). A restart passes the
    port of the first start: the gateway in front keeps its upstream URL."""
    written_to = port_file(db.parent, "backend")
    command = [sys.executable, "-m", "backend", "--host", "127.0.0.1", "--port", str(port),
               "--port-file", str(written_to), "--db", str(db)]  # fmt: skip
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port = read_port_file(written_to, lambda: proc.poll() is None, 30)
    wait_listening(port, proc, 30)
    return proc, port


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(10)


def wait_ready(gateway: Gateway, want: int, seconds: float = 10) -> httpx.Response:
    deadline = time.monotonic() + seconds
    while True:
        response = httpx.get(f"{gateway.url}/readyz", timeout=5)
        if response.status_code == want or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def expect(gateway: Gateway, status: int, reason: Callable[[str], bool] = lambda _: True) -> None:
    response = wait_ready(gateway, status)
    assert response.status_code == status, response.text
    if status == 503:
        body = response.json()
        assert body["status"] == "unavailable"
        assert reason(body["reason"]), body
    assert httpx.get(f"{gateway.url}/healthz", timeout=5).status_code == 200


def test_readyz_follows_the_backend_and_redis(tmp_path: Path) -> None:
    binary = require_redis_server()
    backend, backend_port = start_backend(0, tmp_path / "memories.db")
    redis, redis_port = start_redis_anywhere(binary, tmp_path)
    gateway = start_gateway(
        tmp_path,
        f"http://127.0.0.1:{backend_port}",
        {"MCP_OAUTH_STORAGE": f"redis://127.0.0.1:{redis_port}/0"},
        wait_path="/readyz",
    )
    try:
        expect(gateway, 200)
        stop(backend)
        expect(gateway, 503, lambda reason: "upstream" in reason)
        backend, _ = start_backend(backend_port, tmp_path / "memories.db")
        expect(gateway, 200)
        stop(redis)
        expect(gateway, 503, lambda reason: "store unavailable" in reason)
        errors = metric(gateway.metrics(), "mcp_gateway_store_errors_total", operation="get_client")
        assert errors >= 1
        redis = start_redis(binary, redis_port, tmp_path)
        expect(gateway, 200)
    finally:
        gateway.stop()
        for proc in (backend, redis):
            if proc.poll() is None:
                stop(proc)


def test_readyz_on_sqlite_follows_the_backend(tmp_path: Path) -> None:
    backend, backend_port = start_backend(0, tmp_path / "memories.db")
    gateway = start_gateway(tmp_path, f"http://127.0.0.1:{backend_port}", metrics=False)
    try:
        expect(gateway, 200)
        stop(backend)
        expect(gateway, 503, lambda reason: f":{backend_port}" in reason)
    finally:
        gateway.stop()
        if backend.poll() is None:
            stop(backend)
