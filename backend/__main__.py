"""``memory-backend``: run the memory service with uvicorn."""

from __future__ import annotations

import argparse
import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import uvicorn

from backend.app import (
    DEFAULT_EVENT_QUEUE_SIZE,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_MAX_CONTENT,
    create_app,
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8001
DEFAULT_DB = "memory-backend.db"
# Open SSE streams never finish on their own; give other requests this long, then cut them.
GRACEFUL_SHUTDOWN_SECONDS = 5


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    def default(name: str, fallback: object) -> str:
        return env.get(name, str(fallback))

    parser = argparse.ArgumentParser(prog="memory-backend", description=__doc__)
    add = parser.add_argument
    add("--host", default=default("MEMORY_BACKEND_HOST", DEFAULT_HOST), help="bind address")
    add("--port", type=int, default=default("MEMORY_BACKEND_PORT", DEFAULT_PORT))
    add(
        "--port-file",
        type=Path,
        default=None,
        help="write the bound port here once listening is set up (with --port 0: the "
        "port the system picked)",
    )
    add("--db", default=default("MEMORY_BACKEND_DB", DEFAULT_DB), help="SQLite database file")
    add(
        "--max-content",
        type=int,
        default=default("MEMORY_BACKEND_MAX_CONTENT", DEFAULT_MAX_CONTENT),
        help="largest memory content accepted, in bytes",
    )
    add(
        "--heartbeat",
        type=float,
        default=default("MEMORY_BACKEND_HEARTBEAT", DEFAULT_HEARTBEAT_INTERVAL),
        help="seconds between SSE heartbeat comments",
    )
    add(
        "--event-queue",
        type=int,
        default=default("MEMORY_BACKEND_EVENT_QUEUE", DEFAULT_EVENT_QUEUE_SIZE),
        help="events buffered per SSE subscriber before it is dropped",
    )
    add(
        "--mcp-response",
        choices=["json", "sse"],
        default=default("MEMORY_BACKEND_MCP_RESPONSE", "json"),
        help="how /mcp answers a POST: one JSON body or an SSE stream",
    )
    add(
        "--access-log",
        action="store_true",
        default=env.get("MEMORY_BACKEND_ACCESS_LOG", "") in ("1", "true", "yes"),
    )
    add(
        "--log-level",
        default=default("MEMORY_BACKEND_LOG_LEVEL", "info"),
        choices=["critical", "error", "warning", "info", "debug"],
    )
    return parser


def _fastest(module: str, fallback: str) -> str:
    return module if importlib.util.find_spec(module) is not None else fallback


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser(os.environ)
    args = parser.parse_args(argv)
    if args.max_content < 1 or args.event_queue < 1 or args.heartbeat <= 0:
        parser.error("--max-content, --event-queue and --heartbeat must be positive")
    app = create_app(
        args.db,
        max_content=args.max_content,
        heartbeat_interval=args.heartbeat,
        event_queue_size=args.event_queue,
        mcp_json_response=args.mcp_response == "json",
    )
    options = dict(
        host=args.host,
        port=args.port,
        http=_fastest("httptools", "h11"),
        loop=_fastest("uvloop", "asyncio"),
        access_log=args.access_log,
        log_level=args.log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    if args.port_file is None:
        uvicorn.run(app, **options)
    else:
        serve_reporting_port(uvicorn.Config(app, **options), args.port_file)


def serve_reporting_port(config: uvicorn.Config, port_file: Path) -> None:
    """Bind (port 0: the system picks), write the bound port to `port_file` (whole or not
    at all: written aside, then renamed), then serve on that very socket: whoever starts
    the backend learns its port without a bind-then-release race."""
    sock = config.bind_socket()
    partial = port_file.with_name(port_file.name + ".partial")
    partial.write_text(f"{sock.getsockname()[1]}\n")
    partial.replace(port_file)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        raise SystemExit(3)  # as uvicorn.run: start-up failed


if __name__ == "__main__":
    main()
