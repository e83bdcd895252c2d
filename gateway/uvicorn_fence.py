"""Every uvicorn internal the gateway relies on, in one place, behind a version check.

The server protocol (gateway.http_protocol) subclasses uvicorn's httptools protocol and
reuses its flow control, framing tables and header checks, and its per-connection state
(cycle, pipeline, the keep-alive timer fields and handler, `_start_asgi_task`, which
its own `on_response_complete` calls); gateway.tls overrides
`Server.capture_signals` (PassiveServer) and calls `Config.bind_socket` and
`Config.get_loop_factory` (bind_socket, loop_factory below).
None of these is uvicorn's public API, so they are imported only here, and only from a
uvicorn release the gateway was tested with (SUPPORTED). Any other version stops the
import with one `UnsupportedUvicorn` line, which `memory-gateway` prints before exiting;
pyproject pins the same range.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import socket
from collections.abc import Callable, Generator

from gateway.errors import InternalError

SUPPORTED = ((0, 54), (0, 55))  # [low, high): the releases tested with the fast path


class UnsupportedUvicorn(InternalError, ImportError):
    """The installed uvicorn is not one whose internals the gateway was tested with
    (an ImportError: it stops the import; `memory-gateway` prints it as one line)."""

    unsupported_uvicorn = True


def check_version(version: str) -> None:
    """Raise UnsupportedUvicorn unless `version` is within SUPPORTED."""
    try:
        parts = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        parts = ()
    low, high = SUPPORTED
    if len(parts) != 2 or not low <= parts < high:
        raise UnsupportedUvicorn(
            f"uvicorn {version} is not supported: memory-gateway needs uvicorn "
            f">={low[0]}.{low[1]},<{high[0]}.{high[1]} (it uses uvicorn internals); "
            "install the version pinned in pyproject.toml"
        )


check_version(importlib.metadata.version("uvicorn"))

# The internals, imported only after the check passed.
from uvicorn.config import Config  # noqa: E402
from uvicorn.protocols.http.flow_control import (  # noqa: E402
    HIGH_WATER_LIMIT,
    FlowControl,
)
from uvicorn.protocols.http.httptools_impl import (  # noqa: E402
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
)
from uvicorn.server import Server  # noqa: E402

__all__ = [
    "HEADER_RE",
    "HEADER_VALUE_RE",
    "HIGH_WATER_LIMIT",
    "STATUS_LINE",
    "SUPPORTED",
    "FlowControl",
    "HttpToolsProtocol",
    "PassiveServer",
    "UnsupportedUvicorn",
    "bind_socket",
    "check_version",
    "loop_factory",
]


def bind_socket(config: Config) -> socket.socket:
    """`Config.bind_socket()`: the listening socket, bound before serving (so the port
    is known, and a second listener can be bound alongside)."""
    return config.bind_socket()


def loop_factory(config: Config) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """`Config.get_loop_factory()`: the event loop the configuration asks for."""
    return config.get_loop_factory()


class PassiveServer(Server):
    """A uvicorn Server that leaves the signals to the main one it runs beside
    (overrides the internal `capture_signals`)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield
