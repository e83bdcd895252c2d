"""`memory-gateway serve` in a subprocess, attacking connections against it, and a
bystander measuring how the gateway answers meanwhile. Loopback only, every loop
bounded in bytes and time."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.ports import bound_socket, handed_over, port_of
from tests.proxy.conftest import ROOT, start_upstream, wait_listening

MiB = 1024 * 1024
ATTACKER = "127.0.0.1"
BYSTANDER = "127.0.0.2"  # another address: the per-address cap is not what it meets

# Short budgets so the suite stays quick; test_defaults.py runs the real ones.
SHORT = {
    "MCP_GATEWAY_HEAD_TIMEOUT": "2",
    "MCP_GATEWAY_BODY_IDLE_TIMEOUT": "2",
    "MCP_GATEWAY_BODY_TIMEOUT": "4",
    "MCP_GATEWAY_SEND_TIMEOUT": "3",
}


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


@dataclass
class Gateway:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def serve(tmp: Path, env: dict[str, str] | None = None) -> Iterator[Gateway]:
    """`memory-gateway serve` on loopback in front of the test upstream."""
    upstream = start_upstream()
    listener = bound_socket()  # handed to the gateway: no port race
    port = port_of(listener)
    handing, fds = handed_over(listener)
    log = tmp / "gateway.log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MCP_")}
    environment.update(
        {
            "PYTHONPATH": str(ROOT),
            "MCP_HTTP_PORT": str(port),
            "MCP_GATEWAY_UPSTREAM": upstream.url,
            "MCP_GATEWAY_STATE_DIR": str(tmp / "state"),
            "MCP_OAUTH_STORAGE": "memory://",
            "MCP_OAUTH_SECRET_KEY": "edge-test-secret-key-long-enough-for-hs256",
            **(env or {}),
            **handing,
        }
    )
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve"],
            cwd=tmp, env=environment, stdout=sink, stderr=subprocess.STDOUT, pass_fds=fds,
        )  # fmt: skip
    listener.close()  # the child holds it now
    gateway = Gateway(port, proc, log)
    try:
        wait_listening(port, proc, 20)
        yield gateway
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        upstream.stop()


def connect(gateway: Gateway, source: str = ATTACKER, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", gateway.port))
    return sock


def closed_within(sock: socket.socket, seconds: float) -> tuple[float, bytes]:
    """Read until the gateway closes the connection (or `seconds` pass): (time taken,
    what it sent). Raises AssertionError when it stays open."""
    start = time.monotonic()
    received = b""
    sock.settimeout(0.2)
    while time.monotonic() - start < seconds:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - start, received
        if not data:
            return time.monotonic() - start, received
        received += data
        if len(received) > MiB:
            received = received[-4096:]
    raise AssertionError(f"connection still open after {seconds} s")


@dataclass
class Bystander:
    """A normal client on another address, asking every `every` seconds during an attack."""

    gateway: Gateway
    every: float = 0.2
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Bystander:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(10)

    def _run(self) -> None:
        transport = httpx.HTTPTransport(local_address=BYSTANDER)
        with httpx.Client(base_url=self.gateway.url, transport=transport, timeout=5) as http:
            while not self._stop.is_set():
                start = time.monotonic()
                try:
                    status = http.get("/healthz").status_code
                    if status != 200:
                        self.failures.append(f"status {status}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                self.latencies.append(time.monotonic() - start)
                self._stop.wait(self.every)

    def check(self, limit: float = 1.0) -> None:
        assert not self.failures, self.failures[:3]
        assert self.latencies, "the bystander never asked"
        assert max(self.latencies) < limit, f"bystander waited {max(self.latencies):.2f} s"


class RssWatch:
    """Samples the gateway's resident memory during an attack; `growth` is the peak
    over the value at the start, in MiB."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.start = gateway.rss_mib()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()

    def _sample(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self.peak = max(self.peak, self.gateway.rss_mib())

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self._sample()

    @property
    def growth(self) -> float:
        return self.peak - self.start


def flood(sock: socket.socket, unit: bytes, total: int, seconds: float) -> int:
    """Send `unit` repeatedly without reading, until `total` bytes are sent, `seconds`
    pass, the gateway stops reading for 2 s in a row, or it closes: bytes sent."""
    batch = unit * max(1, 65536 // len(unit))
    sent, deadline = 0, time.monotonic() + seconds
    sock.settimeout(0.25)
    blocked_since: float | None = None
    while sent < total and time.monotonic() < deadline:
        try:
            sent += sock.send(batch)
            blocked_since = None
        except TimeoutError:
            now = time.monotonic()
            blocked_since = blocked_since or now
            if now - blocked_since > 2:
                break
        except (BrokenPipeError, ConnectionResetError):
            break
    return sent


def trickle(sock: socket.socket, data: bytes, every: float, seconds: float) -> float:
    """Send `data` a byte at a time every `every` seconds until the gateway closes the
    connection: seconds until then (AssertionError after `seconds`)."""
    start = time.monotonic()
    sock.settimeout(every)
    for byte in data:
        try:
            sock.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - start
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - start
            return time.monotonic() - start  # an answer (408) and then the close
        except TimeoutError:
            pass
        except ConnectionResetError:
            return time.monotonic() - start
        if time.monotonic() - start > seconds:
            break
    raise AssertionError(f"trickled connection still open after {seconds} s")
