from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from backend.__main__ import DEFAULT_HOST, DEFAULT_PORT, build_parser
from tests.ports import port_file, read_port_file


def test_defaults_bind_loopback_on_8001() -> None:
    args = build_parser({}).parse_args([])
    assert (args.host, args.port, args.mcp_response) == (DEFAULT_HOST, DEFAULT_PORT, "json")
    assert (DEFAULT_HOST, DEFAULT_PORT) == ("127.0.0.1", 8001)
    assert args.max_content == 1024 * 1024
    assert args.heartbeat == 15.0
    assert args.access_log is False


def test_environment_configures_and_flags_win() -> None:
    env = {
        "MEMORY_BACKEND_PORT": "9000",
        "MEMORY_BACKEND_DB": "/data/m.db",
        "MEMORY_BACKEND_MAX_CONTENT": "10",
        "MEMORY_BACKEND_MCP_RESPONSE": "sse",
        "MEMORY_BACKEND_ACCESS_LOG": "1",
    }
    from_env = build_parser(env).parse_args([])
    assert (from_env.port, from_env.db, from_env.max_content) == (9000, "/data/m.db", 10)
    assert from_env.mcp_response == "sse"
    assert from_env.access_log is True
    flagged = build_parser(env).parse_args(["--port", "9100", "--mcp-response", "json"])
    assert (flagged.port, flagged.mcp_response) == (9100, "json")


def test_bad_environment_value_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        build_parser({"MEMORY_BACKEND_PORT": "eighty"}).parse_args([])


def console_script() -> str:
    found = shutil.which("memory-backend", path=str(Path(sys.executable).parent))
    assert found, "the memory-backend console script is not installed"
    return found


def test_console_script_serves_health_on_the_port_it_reports(tmp_path: Path) -> None:
    """`--port 0 --port-file F`: the system picks the port, the backend writes it to F
    and serves there."""
    written_to = tmp_path / "backend.port"
    command = [console_script(), "--port", "0", "--port-file", str(written_to)]
    process = subprocess.Popen(
        [*command, "--db", str(tmp_path / "cli.db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "MEMORY_BACKEND_LOG_LEVEL": "warning"},
    )
    try:
        port = read_port_file(written_to, lambda: process.poll() is None, 20)
        assert port > 0
        assert not written_to.with_name("backend.port.partial").exists()
        response = None
        deadline = time.monotonic() + 20
        while response is None and time.monotonic() < deadline:
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"memory-backend exited early: {output}")
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1)
            except httpx.TransportError:
                time.sleep(0.1)
        assert response is not None, "memory-backend never answered"
        assert response.json()["status"] == "healthy"
        assert (tmp_path / "cli.db").exists()
    finally:
        process.terminate()
        # uvicorn shuts down cleanly, then re-raises the SIGTERM it caught.
        assert process.wait(timeout=10) in (0, -signal.SIGTERM)


def start_backend(db: Path) -> tuple[subprocess.Popen[bytes], int]:
    written_to = port_file(db.parent, "backend")
    command = [console_script(), "--port", "0", "--port-file", str(written_to)]
    process = subprocess.Popen(
        [*command, "--db", str(db), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    port = read_port_file(written_to, lambda: process.poll() is None, 20)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and process.poll() is None:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1)
            return process, port
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    pytest.fail("memory-backend did not come up")


def test_acknowledged_write_survives_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    process, port = start_backend(db)
    try:
        stored = httpx.post(
            f"http://127.0.0.1:{port}/api/memories", json={"content": "acked"}, timeout=5
        )
    finally:
        process.kill()  # no shutdown hook, no checkpoint: only what was committed remains
        process.wait(timeout=10)
    assert stored.status_code == 200

    process, port = start_backend(db)  # a new port: only the database carries over
    try:
        digest = stored.json()["content_hash"]
        fetched = httpx.get(f"http://127.0.0.1:{port}/api/memories/{digest}", timeout=5)
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert fetched.json()["content"] == "acked"
