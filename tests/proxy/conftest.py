from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.proxy.gateway_server import ISSUER, token_service

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on {port} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on {port} did not start")


@dataclass
class Server:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")


def start(module: str, *args: str, port: int | None = None) -> Server:
    port = port or free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", module, str(port), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    server = Server(port, proc)
    try:
        wait_listening(port, proc)
    except Exception:
        server.stop()
        raise
    return server


def start_upstream(port: int | None = None) -> Server:
    return start("tests.proxy.upstream_app", port=port)


def start_gateway(upstream: str, *overrides: str) -> Server:
    return start("tests.proxy.gateway_server", upstream, *overrides)


def bearer(*scopes: str, subject: str = "alice", client_id: str = "client-1") -> dict[str, str]:
    issued = token_service().issue(
        subject=subject, client_id=client_id, scopes=scopes, audience=f"{ISSUER}/mcp"
    )
    return {"Authorization": f"Bearer {issued.token}"}


@pytest.fixture(scope="module")
def upstream() -> Iterator[Server]:
    server = start_upstream()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["fast", "asgi"])
def gateway(upstream: Server, request: pytest.FixtureRequest) -> Iterator[Server]:
    """Every test runs against both server paths: the protocol fast path (bodyless
    requests served inside the protocol) and uvicorn's ASGI path for everything."""
    server = start_gateway(
        upstream.url,
        "upstream_idle_timeout=1.5",
        "upstream_header_timeout=1.0",
        f"protocol={request.param}",
    )
    yield server
    server.stop()


@pytest.fixture
def client(gateway: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        yield http
