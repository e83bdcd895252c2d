"""``memory-backend``: run the memory service with uvicorn."""

from __future__ import annotations

import argparse
import importlib.util
import os
from collections.abc import Mapping, Sequence

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
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        http=_fastest("httptools", "h11"),
        loop=_fastest("uvloop", "asyncio"),
        access_log=args.access_log,
        log_level=args.log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )


if __name__ == "__main__":
    main()
