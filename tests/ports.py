"""Listening ports for the servers the tests start, without port races.

Our own servers pick their port and report it:
- `memory-gateway serve|dev --port 0 --port-file F` and `memory-backend --port 0
  --port-file F` write the port they bound (`port_file` + `gateway.port_zero`);
- an in-process uvicorn, or a test server subprocess, is handed a socket bound here to
  port 0 (`bound_socket`) and serves on it; the socket is never released in between.
  `memory-gateway serve` takes listening sockets the way its workers get them from the
  supervisor (`handed_over`: main, then redirect), for tests whose issuer or redirect
  port must be known before the gateway starts.

`reserved_port` is the one bind-then-release helper, for what truly needs a port number
before the server exists: third-party servers that cannot report theirs (redis-server,
Pebble, oidc-provider, mcp-memory-service, the conformance suite's callback), ports the
README steps name, `serve --workers N` (the supervisor binds), and "nothing listens
here" addresses. Another process may take the port between release and bind: the
starts of redis-server, oidc-provider, mcp-memory-service and the ops gateways go
through `start_retrying`. (The gateway ports Pebble must know are bound here and handed
over: `tests.acme.gateway_process.Listeners`.)
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import uvicorn

from gateway.port_zero import read_port_file
from gateway.workers import LISTEN_FDS_ENV

T = TypeVar("T")

START_ATTEMPTS = 3


def bound_socket(host: str = "127.0.0.1") -> socket.socket:
    """A TCP socket bound to `host`, port 0 (the system picks); the server listens on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.set_inheritable(True)
    return sock


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def handed_over(*sockets: socket.socket) -> tuple[dict[str, str], tuple[int, ...]]:
    """The environment and `pass_fds` that give `sockets` (listening from here on) to a
    `memory-gateway serve` child: the main listener, then the redirect listener. The
    caller closes its copies once the child runs (the child keeps the port bound)."""
    for sock in sockets:
        sock.listen(128)
    fds = tuple(sock.fileno() for sock in sockets)
    return {LISTEN_FDS_ENV: ",".join(map(str, fds))}, fds


def reserved_port() -> int:
    """A loopback port free a moment ago. Only for servers that cannot report their own
    port (see the module docstring); start them through `start_retrying`."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_retrying(start: Callable[[], T], attempts: int = START_ATTEMPTS) -> T:
    """`start()` (which takes fresh `reserved_port()`s each call) again when it fails:
    a server whose reserved port was taken meanwhile exits during start-up, and
    `start` raises. The last failure is raised after `attempts` tries."""
    for attempt in range(1, attempts + 1):
        try:
            return start()
        except (RuntimeError, OSError):
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


def port_file(directory: Path, name: str) -> Path:
    """Where a child writes its port: a fresh path (any old file removed)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.port"
    path.unlink(missing_ok=True)
    return path


__all__ = [
    "bound_socket",
    "handed_over",
    "listen_argument",
    "port_file",
    "port_of",
    "read_port_file",
    "reserved_port",
    "run_uvicorn",
    "start_retrying",
]


def listen_argument(sock: socket.socket) -> str:
    """How a test server subprocess is told to serve on `sock` (see `run_uvicorn`)."""
    return f"fd={sock.fileno()}"


def run_uvicorn(app: Any, listen: str, **options: Any) -> None:
    """uvicorn on `listen`: `fd=N` (a listening socket handed over by the test, see
    `listen_argument`) or a port number on 127.0.0.1 (a restart on a known port)."""
    if listen.startswith("fd="):
        sock = socket.socket(fileno=int(listen.removeprefix("fd=")))
        uvicorn.Server(uvicorn.Config(app, **options)).run(sockets=[sock])
    else:
        uvicorn.run(app, host="127.0.0.1", port=int(listen), **options)
