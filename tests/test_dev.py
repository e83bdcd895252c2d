"""`memory-gateway dev` as a newcomer runs it: certificates, backend, gateway, banner, log."""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.ports import read_port_file


def _wait_for_ca(path: Path, process: subprocess.Popen[str]) -> ssl.SSLContext:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert process.poll() is None, "dev exited early"
        assert time.monotonic() < deadline, "no dev CA after 30 s"
        time.sleep(0.1)
    return ssl.create_default_context(cafile=str(path))


def _wait_for(url: str, verify: ssl.SSLContext, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "dev exited early"
        try:
            httpx.get(url, verify=verify, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer")


def _start_dev(cwd: Path) -> subprocess.Popen[str]:
    """`dev` on ports the system picks (`--port 0 --backend-port 0`), the gateway's port
    also written to `gateway.port`; the banner names both."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_")}
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "dev", "--port", "0", "--backend-port", "0",
         "--port-file", "gateway.port"],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _banner_port(output: str, label: str) -> int:
    found = re.search(rf"^  {label}:\s+https?://[^:]+:(\d+)", output, re.MULTILINE)
    assert found, f"no {label} in the banner: {output}"
    return int(found.group(1))


def test_dev_serves_https_with_the_backend_and_logs_oauth_events(tmp_path: Path) -> None:
    process = _start_dev(tmp_path)
    try:
        verify = _wait_for_ca(tmp_path / "certs" / "dev-ca.pem", process)
        port = read_port_file(tmp_path / "gateway.port", lambda: process.poll() is None, 30)
        base = f"https://localhost:{port}"
        _wait_for(f"{base}/healthz", verify, process)
        meta = httpx.get(f"{base}/.well-known/oauth-authorization-server/mcp", verify=verify)
        assert meta.json()["issuer"] == base
        registered = httpx.post(
            f"{base}/oauth/register", json={"client_name": "Test Client"}, verify=verify
        )
        assert registered.status_code == 201
        health = httpx.get(f"{base}/api/health", verify=verify)
        assert health.json()["status"] == "healthy"
        log = (tmp_path / "logs" / "mcp-memory-service.log").read_text()
        assert "oauth client registered" in log
        assert registered.json()["client_secret"] not in log
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert f"gateway:   {base}" in output
    assert _banner_port(output, "gateway") == port
    assert "claude mcp add --transport http memory" in output
    assert process.returncode in (0, 130), output  # 130: stopped by Ctrl-C, as a user does
    backend_port = _banner_port(output, "upstream")
    try:
        httpx.get(f"http://127.0.0.1:{backend_port}/api/health", timeout=1)
        raise AssertionError("the backend outlived dev")
    except httpx.ConnectError:
        pass


def test_dev_stopped_with_sigterm_stops_its_backend(tmp_path: Path) -> None:
    process = _start_dev(tmp_path)
    try:
        verify = _wait_for_ca(tmp_path / "certs" / "dev-ca.pem", process)
        port = read_port_file(tmp_path / "gateway.port", lambda: process.poll() is None, 30)
        _wait_for(f"https://localhost:{port}/healthz", verify, process)
        health = httpx.get(f"https://localhost:{port}/api/health", verify=verify)
        assert health.json()["status"] == "healthy"  # the backend's answer, through the proxy
    finally:
        process.send_signal(signal.SIGTERM)  # as a supervisor or `kill` does
        output, _ = process.communicate(timeout=30)
    assert process.returncode in (0, 143), output
    backend_port = _banner_port(output, "upstream")
    try:
        httpx.get(f"http://127.0.0.1:{backend_port}/api/health", timeout=1)
        raise AssertionError("the backend outlived dev after SIGTERM")
    except httpx.ConnectError:
        pass
