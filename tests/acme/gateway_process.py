"""A real gateway process configured for ACME, and TLS probes against it."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from tests.ports import bound_socket, handed_over, port_of, reserved_port

API_KEY = "acme-test-api-key-0123456789abcdef"


@dataclass
class GatewayProcess:
    process: subprocess.Popen[bytes]
    https_port: int
    http_port: int
    state_dir: Path
    log: Path
    started: float  # time.monotonic() at Popen

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None


def acme_env(
    state_dir: Path, directory: str, ca_file: Path, domains: str, https_port: int, http_port: int
) -> dict[str, str]:
    return {
        "MCP_HTTPS_ENABLED": "true",
        "MCP_ACME_DOMAINS": domains,
        "MCP_ACME_DIRECTORY": directory,
        "MCP_ACME_CA_FILE": str(ca_file),
        "MCP_ACME_EMAIL": "ops@memory.test",
        "MCP_ACME_RETRY_SECONDS": "1",
        "MCP_HTTP_HOST": "127.0.0.1",
        "MCP_HTTP_PORT": str(https_port),
        "MCP_HTTP_REDIRECT_PORT": str(http_port),
        "MCP_GATEWAY_STATE_DIR": str(state_dir),
        "MCP_GATEWAY_UPSTREAM": f"http://127.0.0.1:{reserved_port()}",
        "MCP_API_KEY": API_KEY,
    }


class Listeners:
    """The gateway's main (HTTPS) and redirect (HTTP) listening sockets, bound here to
    port 0 so that their ports can go into Pebble's configuration (it validates on the
    redirect port) and the gateway's before either starts; handed to the first gateway
    started with them. A restart on the same ports (the tests' point) binds them itself."""

    def __init__(self) -> None:
        self.sockets = [bound_socket(), bound_socket()]
        self.ports = (port_of(self.sockets[0]), port_of(self.sockets[1]))

    def hand_over(self) -> tuple[dict[str, str], tuple[int, ...]]:
        if not self.sockets:
            raise RuntimeError("these listeners were handed to a gateway already")
        return handed_over(*self.sockets)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets = []


@contextmanager
def gateway(
    env: Mapping[str, str], log: Path, listeners: Listeners | None = None
) -> Iterator[GatewayProcess]:
    command = [sys.executable, "-m", "gateway", "serve"]
    handing, fds = listeners.hand_over() if listeners is not None else ({}, ())
    with open(log, "ab") as out:
        started = time.monotonic()
        process = subprocess.Popen(
            command,
            env={**os.environ, **env, **handing},
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=fds,
        )
    if listeners is not None:
        listeners.close()  # the child holds them now
    running = GatewayProcess(
        process,
        int(env["MCP_HTTP_PORT"]),
        int(env["MCP_HTTP_REDIRECT_PORT"]),
        Path(env["MCP_GATEWAY_STATE_DIR"]),
        log,
        started,
    )
    try:
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def peer_certificate(
    port: int, server_name: str, context: ssl.SSLContext | None = None
) -> x509.Certificate:
    """The certificate a new handshake gets (verified when `context` is given)."""
    if context is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def wait_until(predicate: object, timeout: float, what: str, process: GatewayProcess) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise AssertionError(f"the gateway exited while waiting for {what}:\n"
                                 f"{process.log_text()[-3000:]}")  # fmt: skip
        try:
            if predicate():
                return
        except (OSError, ssl.SSLError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}:\n"
                         f"{process.log_text()[-3000:]}")  # fmt: skip


def wait_for_issued(
    running: GatewayProcess, name: str, context: ssl.SSLContext, timeout: float = 60
) -> x509.Certificate:
    """Wait until a handshake verifies against the ACME CA's root; return that certificate."""
    found: list[x509.Certificate] = []

    def issued() -> bool:
        found.append(peer_certificate(running.https_port, name, context))
        return True

    wait_until(issued, timeout, f"a certificate for {name} from the ACME server", running)
    return found[-1]
