"""Real gateway and backend processes on loopback, started as a user would start them."""

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

import httpx

from gateway.certs import ensure_dev_certs


@dataclass(frozen=True)
class LiveGateway:
    url: str
    ca: Path
    verify: ssl.SSLContext
    api_key: str | None
    backend_url: str
    state_dir: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
            if httpx.get(url, verify=verify, timeout=1).status_code < 500:
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
) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(command, env={**os.environ, **env})
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
def live_stack(root: Path, extra_env: Mapping[str, str] | None = None) -> Iterator[LiveGateway]:
    backend_port, gateway_port = free_port(), free_port()
    backend_url = f"http://127.0.0.1:{backend_port}"
    backend_cmd = [
        sys.executable,
        "-m",
        "backend",
        "--host",
        "127.0.0.1",
        "--port",
        str(backend_port),
        "--db",
        str(root / "memories.db"),
    ]
    certs = ensure_dev_certs(root / "certs")
    verify = ssl.create_default_context(cafile=str(certs.ca_cert))
    url = f"https://localhost:{gateway_port}"
    env = {
        "MCP_HTTPS_ENABLED": "true",
        "MCP_SSL_CERT_FILE": str(certs.server_cert),
        "MCP_SSL_KEY_FILE": str(certs.server_key),
        "MCP_HTTP_HOST": "127.0.0.1",
        "MCP_HTTP_PORT": str(gateway_port),
        "MCP_OAUTH_ISSUER": url,
        "MCP_GATEWAY_UPSTREAM": backend_url,
        "MCP_GATEWAY_STATE_DIR": str(root / "state"),
        "MCP_OAUTH_CONSENT": "auto",
        **(extra_env or {}),
    }
    gateway_cmd = [sys.executable, "-m", "gateway", "serve"]
    with (
        running(backend_cmd, {}, f"{backend_url}/api/health", True),
        running(gateway_cmd, env, f"{url}/healthz", verify),
    ):
        yield LiveGateway(
            url, certs.ca_cert, verify, env.get("MCP_API_KEY"), backend_url, root / "state"
        )
