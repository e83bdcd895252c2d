"""Real gateway and backend processes on loopback, started as a user would start them."""

from __future__ import annotations

import dataclasses
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from gateway.app import create_app
from gateway.authserver import ClientResolver
from gateway.certs import ensure_dev_certs
from gateway.settings import Settings
from tests.ports import bound_socket, handed_over, port_file, port_of, read_port_file


@dataclass(frozen=True)
class LiveGateway:
    url: str
    ca: Path
    verify: ssl.SSLContext
    api_key: str | None
    backend_url: str
    state_dir: Path


def wait_for(
    url: str,
    verify: ssl.SSLContext | bool,
    process: subprocess.Popen[bytes],
    timeout: float = 30,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            # A listening socket accepts before the server serves: wait for the answer.
            answer = httpx.get(url, verify=verify, timeout=httpx.Timeout(1, read=timeout))
            if answer.status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:g} s")


@contextmanager
def running(
    command: list[str],
    env: Mapping[str, str],
    health: str,
    verify: ssl.SSLContext | bool,
    timeout: float = 30,
    listener: socket.socket | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """`command` until `health` answers; `listener`: a socket bound by the test, handed
    to a `memory-gateway serve` child as its listening socket (`tests.ports.handed_over`)."""
    handing, fds = handed_over(listener) if listener is not None else ({}, ())
    process = subprocess.Popen(command, env={**os.environ, **env, **handing}, pass_fds=fds)
    if listener is not None:
        listener.close()  # the child holds it now
    try:
        wait_for(health, verify, process, timeout)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def reporting_port(
    command: list[str],
    env: Mapping[str, str],
    written_to: Path,
    health: Callable[[int], str],
    verify: ssl.SSLContext | bool,
    timeout: float = 30,
) -> Iterator[int]:
    """`running`, for a server started on port 0 that writes its port to `written_to`
    (`--port-file`); yields that port once `health(port)` answers."""
    process = subprocess.Popen(command, env={**os.environ, **env})
    try:
        port = read_port_file(written_to, lambda: process.poll() is None, timeout)
        wait_for(health(port), verify, process, timeout)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def backend_command(root: Path, written_to: Path, *extra: str) -> list[str]:
    """The memory backend on loopback, port 0, its port written to `written_to`."""
    return [
        sys.executable, "-m", "backend", "--host", "127.0.0.1", "--port", "0",
        "--port-file", str(written_to), "--db", str(root / "memories.db"), *extra,
    ]  # fmt: skip


@contextmanager
def live_backend(root: Path, *extra: str) -> Iterator[str]:
    """The memory backend as a subprocess (`extra`: more of its flags); yields its URL."""
    written_to = port_file(root, "backend")
    with reporting_port(
        backend_command(root, written_to, *extra),
        {},
        written_to,
        lambda port: f"http://127.0.0.1:{port}/api/health",
        True,
    ) as port:
        yield f"http://127.0.0.1:{port}"


@contextmanager
def live_stack(root: Path, extra_env: Mapping[str, str] | None = None) -> Iterator[LiveGateway]:
    """Backend and `memory-gateway serve`, both on port 0 (their ports read back); the
    gateway's issuer is derived from the port it bound: https://localhost:PORT."""
    certs = ensure_dev_certs(root / "certs")
    verify = ssl.create_default_context(cafile=str(certs.ca_cert))
    with live_backend(root) as backend_url:
        env = {
            "MCP_HTTPS_ENABLED": "true",
            "MCP_SSL_CERT_FILE": str(certs.server_cert),
            "MCP_SSL_KEY_FILE": str(certs.server_key),
            "MCP_HTTP_HOST": "127.0.0.1",
            "MCP_HTTP_PORT": "0",
            "MCP_GATEWAY_UPSTREAM": backend_url,
            "MCP_GATEWAY_STATE_DIR": str(root / "state"),
            "MCP_OAUTH_CONSENT": "auto",
            **(extra_env or {}),
        }
        written_to = port_file(root, "gateway")
        gateway_cmd = [sys.executable, "-m", "gateway", "serve", "--port-file", str(written_to)]
        with reporting_port(
            gateway_cmd, env, written_to, lambda port: f"https://localhost:{port}/healthz", verify
        ) as port:
            yield LiveGateway(
                f"https://localhost:{port}",
                certs.ca_cert,
                verify,
                env.get("MCP_API_KEY"),
                backend_url,
                root / "state",
            )


@contextmanager
def in_process_stack(
    root: Path,
    extra_env: Mapping[str, str] | None = None,
    *,
    clock: Callable[[], float] = time.time,
    client_resolver: ClientResolver | None = None,
    access_token_ttl: int | None = None,
) -> Iterator[LiveGateway]:
    """Backend as a subprocess, the real gateway (`create_app`) in this process under
    uvicorn over HTTPS, on a socket bound here to port 0 and never released. The seams
    `memory-gateway serve` has no setting for: the `clock` the OAuth server and token
    service read, a `client_resolver` (CIMD fetches), an `access_token_ttl` in seconds."""
    certs = ensure_dev_certs(root / "certs")
    sock = bound_socket()
    url = f"https://localhost:{port_of(sock)}"
    with live_backend(root) as backend_url:
        settings = Settings.from_env(
            {
                "MCP_HTTP_HOST": "127.0.0.1",
                "MCP_HTTP_PORT": str(port_of(sock)),
                "MCP_OAUTH_ISSUER": url,
                "MCP_GATEWAY_UPSTREAM": backend_url,
                "MCP_GATEWAY_STATE_DIR": str(root / "state"),
                "MCP_OAUTH_CONSENT": "auto",
                "MCP_OAUTH_RATE_LIMIT_PER_MINUTE": "0",
                **(extra_env or {}),
            }
        )
        if access_token_ttl is not None:
            settings = dataclasses.replace(settings, access_token_ttl=access_token_ttl)
        app = create_app(settings, client_resolver=client_resolver, clock=clock)
        config = uvicorn.Config(
            app,
            ssl_certfile=os.fspath(certs.server_cert),
            ssl_keyfile=os.fspath(certs.server_key),
            lifespan="on",
            log_level="warning",
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 20
            while not server.started:
                if not thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError("the in-process gateway did not start")
                time.sleep(0.05)
            verify = ssl.create_default_context(cafile=str(certs.ca_cert))
            yield LiveGateway(url, certs.ca_cert, verify, None, backend_url, root / "state")
        finally:
            server.should_exit = True
            thread.join(timeout=15)
            sock.close()
