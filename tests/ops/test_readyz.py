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
from tests.proxy.conftest import free_port, wait_listening
from tests.store.redis_server import _answers_ping, require_redis_server


def start_backend(port: int, db: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "backend", "--host", "127.0.0.1", "--port", str(port),
               "--db", str(db)]  # fmt: skip
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port, proc, 30)
    return proc


def start_redis(binary: str, port: int, directory: Path) -> subprocess.Popen[bytes]:
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(directory)]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not _answers_ping(port):
        assert proc.poll() is None
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    return proc


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
    backend_port, redis_port = free_port(), free_port()
    backend = start_backend(backend_port, tmp_path / "memories.db")
    redis = start_redis(binary, redis_port, tmp_path)
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
        backend = start_backend(backend_port, tmp_path / "memories.db")
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
    backend_port = free_port()
    backend = start_backend(backend_port, tmp_path / "memories.db")
    gateway = start_gateway(tmp_path, f"http://127.0.0.1:{backend_port}", metrics=False)
    try:
        expect(gateway, 200)
        stop(backend)
        expect(gateway, 503, lambda reason: f":{backend_port}" in reason)
    finally:
        gateway.stop()
        if backend.poll() is None:
            stop(backend)
