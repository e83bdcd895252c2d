"""A throwaway redis-server on loopback, one per test session.

Tests marked `redis` skip when `redis-server` is not on PATH, unless REQUIRE_REDIS=1
(CI), where a missing server is a failure.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.ports import reserved_port, start_retrying


def require_redis_server() -> str:
    binary = shutil.which("redis-server")
    if binary is not None:
        return binary
    reason = "redis-server is not installed (apt-get install redis-server)"
    if os.environ.get("REQUIRE_REDIS", "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail(f"REQUIRE_REDIS=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(binary: str, port: int, directory: Path) -> subprocess.Popen[bytes]:
    """redis-server on 127.0.0.1:`port`, answering PING; RuntimeError if it exits or
    stays silent for 10 s (a reserved port taken meanwhile makes it exit)."""
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--daemonize", "no", "--dir", str(directory)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not _answers_ping(port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise RuntimeError(f"redis-server on port {port} did not start")
        time.sleep(0.05)
    return process


def start_redis_anywhere(binary: str, directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    """redis-server cannot report a port it picked: a reserved port, retried if taken."""

    def start() -> tuple[subprocess.Popen[bytes], int]:
        port = reserved_port()
        return start_redis(binary, port, directory), port

    return start_retrying(start)


@contextmanager
def redis_server(binary: str, directory: Path) -> Iterator[str]:
    """The URL of a fresh redis-server: loopback only, nothing written to disk."""
    process, port = start_redis_anywhere(binary, directory)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = require_redis_server()
    with redis_server(binary, tmp_path_factory.mktemp("redis")) as url:
        yield url


def unique_prefix() -> str:
    """Each test gets its own key prefix on the shared server, so tests never see each other."""
    return f"test-{secrets.token_hex(6)}:"
