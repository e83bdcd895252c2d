"""The MCP conformance suite's authorization-server scenarios against the live gateway.

`@modelcontextprotocol/conformance authorization` checks the RFC 8414 metadata and runs an
authorization code grant with PKCE for a pre-registered public client; it prints the
authorize URL for a person to open, which the test follows like a browser (auto
consent) so the suite's loopback callback receives the code.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.support import NodeClients, http_client, register
from tests.integration.live import LiveGateway
from tests.ports import reserved_port

pytestmark = pytest.mark.node

SUITE = "@modelcontextprotocol/conformance"


def suite_version(node: NodeClients) -> str:
    package = node.directory / "node_modules" / SUITE / "package.json"
    return str(json.loads(package.read_text())["version"])


def play_browser(
    lines: list[str], process: subprocess.Popen[str], gateway: LiveGateway
) -> list[str]:
    """Reads the suite's output; opens each authorize URL it prints and delivers the
    redirect to its callback server. Returns what it did, for failure messages."""
    actions: list[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line.rstrip())
        if line.startswith(f"{gateway.url}/oauth/authorize?"):
            answer = httpx.get(line.strip(), verify=gateway.verify, timeout=15)
            location = answer.headers.get("location", "")
            actions.append(f"authorize -> {answer.status_code} {location[:60]}")
            deliver(location, actions)
    return actions


def deliver(location: str, actions: list[str]) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            actions.append(f"callback -> {httpx.get(location, timeout=5).status_code}")
            return
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def checks(output_dir: Path) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in sorted(output_dir.rglob("checks.json")):
        found.extend(json.loads(path.read_text()))
    return found


def test_conformance_authorization_server_scenarios_all_pass(
    node: NodeClients, gateway: LiveGateway, tmp_path: Path
) -> None:
    """D2/D3 metadata and A1-A7/T1-T3 code grant, as judged by the MCP conformance suite."""
    port = reserved_port()  # the conformance suite listens there for the redirect
    with http_client(gateway) as http:
        client_id = register(http, f"http://127.0.0.1:{port}/callback")
    command = [
        node.modern_node(),
        str(node.bin("conformance")),
        "authorization",
        "--url",
        gateway.url,
        "--client-id",
        client_id,
        "--resource",
        f"{gateway.url}/mcp",
        "--port",
        str(port),
        "--output-dir",
        str(tmp_path),
    ]
    path = f"{node.bin('node').parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "NODE_EXTRA_CA_CERTS": str(gateway.ca), "PATH": path}
    process = subprocess.Popen(
        command,
        cwd=node.directory,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    actions: list[str] = []
    reader = threading.Thread(
        target=lambda: actions.extend(play_browser(lines, process, gateway)), daemon=True
    )
    reader.start()
    try:
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=10)
    report = "\n".join([f"conformance {suite_version(node)}", *lines, *actions])
    assert code == 0, report
    results = checks(tmp_path)
    assert {c["id"] for c in results} >= {
        "authorization-server-metadata",
        "authorization-code-grant",
    }
    failed = [c for c in results if c["status"] != "SUCCESS"]
    assert not failed, json.dumps(failed, indent=1)
