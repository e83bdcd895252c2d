from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.http_protocol import CorkedHttpToolsProtocol, fast_proxy_protocol
from gateway.tls import GatewayServer
from tests.ports import bound_socket, listen_argument, port_of
from tests.proxy.gateway_server import ISSUER, build, settings_from, token_service

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
    """A server for a test: a child process (`proc`), or uvicorn in a thread of this
    process (`stopper` stops it)."""

    port: int
    proc: subprocess.Popen[bytes] | None = None
    stopper: Callable[[], None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.stopper is not None:
            self.stopper()
            return
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def rss_kib(self) -> int:
        """The child process's resident memory (a server in a thread has none its own)."""
        assert self.proc is not None, "rss_kib needs a server in its own process"
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
    """The ProxyApp of tests.proxy.gateway_server on uvicorn in a thread of this process
    (no child process: the proxy is built here, with the real Forwarder), on a port it
    bound itself (0, read back). `protocol=asgi` serves every request through ASGI,
    otherwise bodyless and small-body requests take the protocol fast path."""
    settings, ssl = settings_from(upstream, list(overrides))
    assert not ssl, "TLS options need start_gateway_process"
    proxy = build(settings)
    asgi_only = "protocol=asgi" in overrides
    http = CorkedHttpToolsProtocol if asgi_only else fast_proxy_protocol(proxy, lambda _: True)
    return serve_in_thread(proxy, http)


def serve_in_thread(app: Any, http: type[CorkedHttpToolsProtocol]) -> Server:
    """`app` on uvicorn (protocol class `http`) in a thread of this process, on a port
    it bound itself (0, read back); `stop()` ends it."""
    server = GatewayServer(
        app, "127.0.0.1", 0, None, loop="uvloop", http=http,
        lifespan="off", log_config=None, log_level="warning", access_log=False,
        server_header=False, date_header=False, proxy_headers=False,
    )  # fmt: skip
    thread = threading.Thread(target=server.run, name="test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError("the in-process server did not start")
        time.sleep(0.01)
    assert server.port is not None

    def stop() -> None:
        server.stop()
        thread.join(timeout=10)

    return Server(server.port, stopper=stop)


def start_gateway_process(upstream: str, *overrides: str) -> Server:
    """The same gateway in a child process (`python -m tests.proxy.gateway_server`): for
    tests that measure its own memory or need TLS options."""
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


# What the dual-path gateways of these tests are started with.
DUAL_PATH_OVERRIDES = ("upstream_idle_timeout=1.5", "upstream_header_timeout=1.0")


@pytest.fixture(scope="module", params=["fast", "asgi"])
def gateway(upstream: Server, request: pytest.FixtureRequest) -> Iterator[Server]:
    """Every test runs against both server paths: the protocol fast path (bodyless
    requests served inside the protocol) and uvicorn's ASGI path for everything."""
    server = start_gateway(upstream.url, *DUAL_PATH_OVERRIDES, f"protocol={request.param}")
    yield server
    server.stop()


@pytest.fixture
def client(gateway: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        yield http
