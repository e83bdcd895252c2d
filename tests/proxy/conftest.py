from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.ports import bound_socket, listen_argument, port_of
from tests.proxy.gateway_server import ISSUER, token_service

ROOT = Path(__file__).resolve().parents[2]


PROBE = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def wait_listening(
    port: int, proc: subprocess.Popen[bytes], seconds: float = 10.0, *, tls: bool = False
) -> None:
    """Until the HTTP server on `port` answers one request (any status). A connect alone
    proves nothing: a listening socket handed over by the test accepts connections into
    its backlog before the server serves; the probe waits there for the answer. `tls`:
    the probe goes over TLS (the certificate is not checked: only the answer counts)."""
    context = None
    if tls:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on {port} exited with {proc.returncode}")
        left = max(0.2, deadline - time.monotonic())
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=left) as raw:
                sock = raw if context is None else context.wrap_socket(raw)
                sock.sendall(PROBE)
                if sock.recv(5) == b"HTTP/":
                    return
        except OSError:
            pass
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
    """`python -m module` serving on a socket bound here (port 0) and handed over, or
    on `port` (a restart where a server was: the test's point is that very port)."""
    sock = None if port is not None else bound_socket()
    if sock is not None:
        sock.listen(128)
    listen = str(port) if sock is None else listen_argument(sock)
    proc = subprocess.Popen(
        [sys.executable, "-m", module, listen, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        pass_fds=() if sock is None else (sock.fileno(),),
    )
    if sock is not None:
        port = port_of(sock)
        sock.close()  # the child holds it now
    assert port is not None
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
