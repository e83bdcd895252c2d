"""Port 0: the system picks a free listening port and the gateway reads it back.

`memory-gateway serve --port 0` (or `MCP_HTTP_PORT=0`) and `memory-gateway dev --port 0`
bind the listening socket before the settings are final, so everything derived from the
port (the issuer when none is configured, the dev banner) names the real one, and
`--port-file` tells whoever started the gateway which port it got: no picking a port,
releasing it and binding it again (a race with every other process on the machine).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path

PORT_ENV = "MCP_HTTP_PORT"


def wants_any_port(flag: str | None, env: Mapping[str, str]) -> bool:
    """True when the port asked for (the flag wins over the environment) is 0."""
    value = flag if flag is not None else env.get(PORT_ENV)
    return value is not None and value.strip() == "0"


def bind_any(host: str) -> socket.socket:
    """A listening socket on `host`, port chosen by the system (as the workers bind)."""
    from gateway.workers import bind

    return bind(host, 0)


def write_port_file(path: Path, port: int) -> None:
    """Whole or not at all: written aside, then renamed over `path`."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(f"{port}\n")
    partial.replace(path)


def read_port_file(path: Path, alive: Callable[[], bool], timeout: float) -> int:
    """The port a child process wrote to `path`; `alive()` False (the child exited) or
    `timeout` seconds without the file raise RuntimeError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return int(path.read_text())
        if not alive():
            raise RuntimeError(f"exited before writing its port to {path}")
        time.sleep(0.05)
    raise RuntimeError(f"no port in {path} within {timeout:g} s")
