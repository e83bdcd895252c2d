"""Claude Code itself (npm @anthropic-ai/claude-code, pinned in tests/clients'
package-lock.json) as a client of the gateway, headless and without an Anthropic
account: `claude mcp add --transport http`, `claude mcp login` in a pseudo-terminal
with BROWSER pointing at tests/clients/claude_browser.py, then `claude mcp list`.

Twice: with CIMD on and Claude Code's metadata document supplied in MCP_OAUTH_CIMD_DIR
(Claude Code then uses `https://claude.ai/oauth/claude-code-client-metadata` as its
client_id and nothing is fetched), and with CIMD off (it registers dynamically).
Claude Code's own outbound traffic (updates, telemetry) is turned off by its settings.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e.support import CLIENTS_DIR
from tests.integration.live import live_backend, running
from tests.ports import bound_socket, port_of

CLAUDE = CLIENTS_DIR / "node_modules" / ".bin" / "claude"
CLAUDE_CODE_ID = "https://claude.ai/oauth/claude-code-client-metadata"
QUIET = {
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
}


def claude() -> Path:
    if CLAUDE.exists():
        return CLAUDE
    problem = "tests/clients/node_modules/.bin/claude is missing (run `npm ci` in tests/clients)"
    if os.environ.get("REQUIRE_NODE") == "1":
        pytest.fail(f"REQUIRE_NODE=1 but {problem}")
    pytest.skip(problem)


@contextmanager
def plain_stack(root: Path, **extra: str) -> Iterator[str]:
    """Backend and gateway on loopback over plain HTTP (issuer http://localhost:PORT)."""
    listener = bound_socket()  # the gateway's, handed over at its start
    gateway_port = port_of(listener)
    url = f"http://localhost:{gateway_port}"
    env = {
        "MCP_HTTP_HOST": "127.0.0.1",
        "MCP_HTTP_PORT": str(gateway_port),
        "MCP_OAUTH_ISSUER": url,
        "MCP_GATEWAY_STATE_DIR": str(root / "state"),
        "MCP_OAUTH_CONSENT": "auto",
        "MCP_OAUTH_RATE_LIMIT_PER_MINUTE": "0",
        "MCP_GATEWAY_LOG_FILE": str(root / "gateway.log"),
        **extra,
    }
    gateway_cmd = [sys.executable, "-m", "gateway", "serve"]
    health = f"http://127.0.0.1:{gateway_port}/healthz"
    with live_backend(root) as backend:
        env["MCP_GATEWAY_UPSTREAM"] = backend
        with running(gateway_cmd, env, health, True, listener=listener):
            yield url


def in_pty(command: list[str], env: dict[str, str], cwd: Path, timeout: float) -> str:
    """Run `command` with a pseudo-terminal as its terminal; its output (bounded)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        command,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    os.close(follower)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(output) < 1_000_000:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the terminal closed: the process ended
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        os.close(leader)
    return output.decode("utf-8", "replace")


def login_with_claude_code(tmp_path: Path, url: str) -> tuple[str, str, list[str]]:
    home = tmp_path / "home"
    project = tmp_path / "project"
    home.mkdir()
    project.mkdir()
    browser = tmp_path / "browser"
    browser.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" "{CLIENTS_DIR / "claude_browser.py"}" "$@"\n'
    )
    browser.chmod(0o755)
    log = tmp_path / "browser.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE"))},
        **QUIET,
        "HOME": str(home),
        "BROWSER": str(browser),
        "CLAUDE_BROWSER_LOG": str(log),
        "TERM": "xterm",
    }
    binary = str(claude())
    added = subprocess.run(
        [binary, "mcp", "add", "--transport", "http", "memory", f"{url}/mcp"],
        env=env,
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert added.returncode == 0, added.stdout + added.stderr
    login = in_pty([binary, "mcp", "login", "memory"], env, project, timeout=90)
    listed = subprocess.run(
        [binary, "mcp", "list"],
        env=env,
        cwd=project,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    visits = log.read_text().splitlines() if log.exists() else []
    return login, listed.stdout + listed.stderr, visits


def assert_connected(listed: str) -> None:
    lines = [line for line in listed.splitlines() if line.startswith("memory:")]
    assert lines, listed
    assert "Connected" in lines[0], listed


def test_claude_code_logs_in_with_a_supplied_metadata_document(tmp_path: Path) -> None:
    claude()
    documents = tmp_path / "cimd"
    documents.mkdir()
    (documents / "claude-code.json").write_text(
        json.dumps(
            {
                "client_id": CLAUDE_CODE_ID,
                "client_name": "Claude Code",
                "redirect_uris": ["http://localhost/callback", "http://127.0.0.1/callback"],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
            }
        )
    )
    with plain_stack(tmp_path, MCP_OAUTH_CIMD_DIR=str(documents)) as url:
        login, listed, visits = login_with_claude_code(tmp_path, url)
    assert "Authenticated" in login, login[-2000:]
    assert visits, login[-2000:]
    assert "client_id=https%3A%2F%2Fclaude.ai%2Foauth%2Fclaude-code-client-metadata" in visits[0]
    assert any(line.startswith("callback 200") for line in visits), visits
    assert_connected(listed)


def test_claude_code_logs_in_by_registering_when_cimd_is_off(tmp_path: Path) -> None:
    claude()
    with plain_stack(tmp_path, MCP_OAUTH_CIMD_ENABLED="false") as url:
        login, listed, visits = login_with_claude_code(tmp_path, url)
    assert "Authenticated" in login, login[-2000:]
    assert visits, login[-2000:]
    assert "client_id=mcp_client_" in visits[0], visits[0]
    assert_connected(listed)
