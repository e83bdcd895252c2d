"""Issue 9: the uvicorn fence, MCP_GATEWAY_FAST_PATH=off and the edge settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gateway.edge import ConnectionLimiter, EdgeLimits
from gateway.settings import Settings, SettingsError
from gateway.uvicorn_fence import UnsupportedUvicorn, check_version
from tests.edge.support import SHORT, closed_within, connect, flood, serve
from tests.proxy.conftest import ROOT


@pytest.mark.parametrize("version", ["0.54.0", "0.54.7"])
def test_tested_uvicorn_versions_pass(version: str) -> None:
    check_version(version)


@pytest.mark.parametrize("version", ["0.53.9", "0.55.0", "1.0", "garbage"])
def test_other_uvicorn_versions_fail_with_one_clear_line(version: str) -> None:
    with pytest.raises(UnsupportedUvicorn) as info:
        check_version(version)
    message = str(info.value)
    assert "\n" not in message
    assert f"uvicorn {version} is not supported" in message
    assert ">=0.54,<0.55" in message


def test_start_up_on_an_unsupported_uvicorn_is_one_line_and_exit_1(tmp_path: Path) -> None:
    # A fake distribution metadata earlier on the path reports another version.
    dist = tmp_path / "uvicorn-9.9.9.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: uvicorn\nVersion: 9.9.9\n")
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--port", "1"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "memory-gateway: cannot start: uvicorn 9.9.9 is not supported: memory-gateway "
        "needs uvicorn >=0.54,<0.55 (it uses uvicorn internals); install the version "
        "pinned in pyproject.toml"
    ]


def test_edge_settings_are_read_and_validated() -> None:
    settings = Settings.from_env(
        {
            "MCP_GATEWAY_HEAD_TIMEOUT": "3",
            "MCP_GATEWAY_BODY_IDLE_TIMEOUT": "4",
            "MCP_GATEWAY_BODY_TIMEOUT": "5",
            "MCP_GATEWAY_SEND_TIMEOUT": "6",
            "MCP_GATEWAY_KEEPALIVE_TIMEOUT": "7",
            "MCP_GATEWAY_MAX_HEAD_BYTES": "8192",
            "MCP_GATEWAY_MAX_PIPELINED": "2",
            "MCP_GATEWAY_MAX_CONNECTIONS": "100",
            "MCP_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS": "10",
            "MCP_GATEWAY_FAST_PATH": "off",
            "MCP_GATEWAY_ALLOWED_ORIGINS": "https://Claude.ai, https://app.example:443",
        }
    )
    assert settings.edge == EdgeLimits(3, 4, 5, 6, 7, 8192, 2, 100, 10)
    assert settings.fast_path is False
    assert settings.allowed_origins == ("https://claude.ai", "https://app.example")
    assert Settings.from_env({}).edge == EdgeLimits()
    assert Settings.from_env({}).fast_path is True
    with pytest.raises(SettingsError, match="MCP_GATEWAY_ALLOWED_ORIGINS"):
        Settings.from_env({"MCP_GATEWAY_ALLOWED_ORIGINS": "claude.ai"})
    with pytest.raises(SettingsError, match="MCP_GATEWAY_HEAD_TIMEOUT"):
        Settings.from_env({"MCP_GATEWAY_HEAD_TIMEOUT": "0"})


def test_connection_limiter_counts_per_key_and_in_total() -> None:
    limiter = ConnectionLimiter(per_address=2, total=3)
    assert limiter.admit("a")
    assert limiter.admit("a")
    assert not limiter.admit("a")
    assert limiter.admit("b")
    assert not limiter.admit("c")  # total
    limiter.release("a")
    assert limiter.admit("c")
    limiter.release("zzz")  # unknown: nothing happens
    assert limiter.open == 3


def test_fast_path_off_serves_everything_through_asgi_with_the_same_budgets(
    tmp_path: Path,
) -> None:
    with serve(tmp_path, {**SHORT, "MCP_GATEWAY_FAST_PATH": "off"}) as gateway:
        with httpx.Client(base_url=gateway.url, timeout=5) as http:
            denied = http.get("/api/memories")
            assert denied.status_code == 401
            assert denied.headers["www-authenticate"].startswith("Bearer")
            assert http.get("/healthz").json() == {"status": "ok"}
        sock = connect(gateway)
        sock.sendall(b"GET /api/memories HTTP/1.1\r\nHost: x\r\n")
        took, answer = closed_within(sock, 30)
        assert took < 4
        assert answer.startswith(b"HTTP/1.1 408 ")
        start = gateway.rss_mib()
        sock = connect(gateway)
        flood(sock, b"GET /api/memories HTTP/1.1\r\nHost: x\r\n\r\n", 16 * 1024 * 1024, 8)
        sock.close()
        assert gateway.rss_mib() - start < 64


def test_connections_without_a_key_count_in_the_total_only() -> None:
    limiter = ConnectionLimiter(per_address=1, total=3)
    assert limiter.admit(None)
    assert limiter.admit(None)
    assert limiter.admit("a")
    assert not limiter.admit(None)  # total
    limiter.release(None)
    assert limiter.open == 2
