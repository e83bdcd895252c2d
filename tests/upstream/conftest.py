"""The real mcp-memory-service (from the package index) behind the real gateway.

The service is installed by tests/upstream/install.sh into a venv of its own (CI runs
it; locally run it once, or these tests skip). MCP_MEMORY_SERVICE_VERSION picks the
version (default: the pinned one), MCP_MEMORY_SERVICE_VENV the venv. With
REQUIRE_MCP_MEMORY_SERVICE=1 (set by .ci/run) a missing venv fails instead of skipping.

Both of its servers run as a user would run them, with their own API key and OAuth off:
the web app (`memory server --http`: REST, dashboard, its own /mcp) and the standalone
MCP server (`memory server --streamable-http`). The gateway in front of each holds
that key as MCP_GATEWAY_UPSTREAM_API_KEY.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.integration.live import running
from tests.ports import bound_socket, port_of, reserved_port, start_retrying

VERSION = os.environ.get("MCP_MEMORY_SERVICE_VERSION", "10.59.0")
VENV = Path(
    os.environ.get("MCP_MEMORY_SERVICE_VENV")
    or Path.home() / ".cache" / "memory-gateway" / f"mcp-memory-service-{VERSION}"
)
UPSTREAM_KEY = "upstream-own-key-" + secrets.token_urlsafe(16)
GATEWAY_KEY = "gateway-operator-key-" + secrets.token_urlsafe(16)


@dataclass(frozen=True)
class Stack:
    gateway: str
    upstream: str
    state_dir: Path
    log: Path


def memory_command() -> Path:
    command = VENV / "bin" / "memory"
    if not command.exists():
        message = (
            f"mcp-memory-service {VERSION} is not installed in {VENV} "
            f"(run: bash tests/upstream/install.sh {VERSION})"
        )
        if os.environ.get("REQUIRE_MCP_MEMORY_SERVICE") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return command


def upstream_env(root: Path) -> dict[str, str]:
    return {
        "HOME": str(root),
        "MCP_MEMORY_STORAGE_BACKEND": "sqlite_vec",
        "MCP_MEMORY_SQLITE_PATH": str(root / "memories.db"),
        "MCP_MEMORY_BACKUPS_PATH": str(root / "backups"),
        "MCP_API_KEY": UPSTREAM_KEY,
        "MCP_OAUTH_ENABLED": "false",
        "MCP_MDNS_ENABLED": "false",
        "MCP_CONSOLIDATION_ENABLED": "false",
        "MCP_HTTPS_ENABLED": "false",
    }


@contextmanager
def upstream(root: Path, mode: str) -> Iterator[str]:
    """`mode` "web" (memory server --http) or "mcp" (memory server --streamable-http).
    mcp-memory-service cannot report a port it picked: a reserved one, retried if taken."""
    command = memory_command()
    root.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:

        def start() -> str:
            port = reserved_port()
            url = f"http://127.0.0.1:{port}"
            env = upstream_env(root)
            if mode == "web":
                args = [str(command), "server", "--http"]
                env |= {"MCP_HTTP_HOST": "127.0.0.1", "MCP_HTTP_PORT": str(port)}
                health = f"{url}/api/health"
            else:
                args = [str(command), "server", "--streamable-http"]
                args += ["--sse-host", "127.0.0.1", "--sse-port", str(port)]
                health = f"{url}/health"
            stack.enter_context(running(args, env, health, True, timeout=120))
            return url

        yield start_retrying(start)


@contextmanager
def gateway(root: Path, upstream_url: str, **extra: str) -> Iterator[str]:
    listener = bound_socket()
    port = port_of(listener)
    url = f"http://127.0.0.1:{port}"
    env = {
        "MCP_HTTP_HOST": "127.0.0.1",
        "MCP_HTTP_PORT": str(port),
        "MCP_OAUTH_ISSUER": url,
        "MCP_GATEWAY_UPSTREAM": upstream_url,
        "MCP_GATEWAY_UPSTREAM_API_KEY": UPSTREAM_KEY,
        "MCP_GATEWAY_STATE_DIR": str(root / "gateway-state"),
        "MCP_OAUTH_CONSENT": "auto",
        "MCP_OAUTH_RATE_LIMIT_PER_MINUTE": "0",
        "MCP_API_KEY": GATEWAY_KEY,
        "MCP_GATEWAY_LOG_FILE": str(root / "gateway.log"),
        **extra,
    }
    command = [sys.executable, "-m", "gateway", "serve"]
    with running(command, env, f"{url}/healthz", True, listener=listener):
        yield url


@contextmanager
def stack(root: Path, mode: str) -> Iterator[Stack]:
    with upstream(root / mode, mode) as up, gateway(root / mode, up) as gw:
        yield Stack(gw, up, root / mode / "gateway-state", root / mode / "gateway.log")


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack(tmp_path_factory.mktemp("mms"), "web") as live:
        yield live


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack(tmp_path_factory.mktemp("mms"), "mcp") as live:
        yield live


def http(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=30)
