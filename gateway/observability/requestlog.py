"""The request log: one line per request, JSON (MCP_GATEWAY_LOG_FORMAT=json) or text.

Fields: time, request id, client address, method, path (never the query string), status,
bytes sent, duration, upstream duration, client id and subject. Never a token, code,
secret or key: credentials travel in headers, the query string or bodies, none of which
is logged, and a path segment or request id that looks like a JWT, or that equals the
API key, is replaced by `[redacted]`.

Lines are buffered and written in one go at most `FLUSH_SECONDS` later (or at once past
`FLUSH_BYTES`), to the same streams as the gateway's log (stderr and MCP_GATEWAY_LOG_FILE),
so a request costs a formatting call and a list append, not a system call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from gateway.observability.exchange import Exchange

LogFormat = Literal["json", "text"]
FLUSH_SECONDS = 0.2
FLUSH_BYTES = 64 * 1024
MAX_PATH = 512
_JWT = re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
REDACTED = "[redacted]"
_REMEMBERED_PATHS = 1024
_REMEMBERED_PATH = 256


class LineSink:
    """Buffers lines and writes them to `write` (default: the root logger's streams)."""

    def __init__(self, write: Callable[[str], None] | None = None) -> None:
        self._write = write or write_to_log_streams
        self._lines: list[str] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None

    def add(self, line: str) -> None:
        self._lines.append(line)
        self._size += len(line)
        if self._size >= FLUSH_BYTES:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        text = "\n".join(self._lines) + "\n"
        self._lines, self._size = [], 0
        with contextlib.suppress(OSError, ValueError):
            self._write(text)  # a closed or broken log stream must not break requests


def write_to_log_streams(text: str) -> None:
    """Write to every stream handler of the root logger (stderr, the log file); one
    without an open stream (a closed or not yet opened FileHandler) is passed over."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            with handler.lock or _NoLock():
                stream = handler.stream
                if stream is None:
                    continue
                stream.write(text)
                stream.flush()


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class RequestLog:
    def __init__(
        self, log_format: LogFormat, sink: LineSink, *, secrets: tuple[str, ...] = ()
    ) -> None:
        self.format = log_format
        self.sink = sink
        self.secrets = frozenset(s for s in secrets if s)
        self.pid = os.getpid()
        self._clock = _Clock()
        self._paths: dict[str, str] = {}

    def write(self, exchange: Exchange, seconds: float) -> None:
        self.sink.add(self.line(exchange, seconds))

    def line(self, exchange: Exchange, seconds: float) -> str:
        path = self._paths.get(exchange.path)
        if path is None:
            path = self._remember_path(exchange.path)
        raw = exchange.request_id
        request_id = None
        if raw is not None:  # a JWT-looking or secret id is redacted
            request_id = raw.decode("latin-1")
            if request_id in self.secrets or ("." in request_id and _JWT.fullmatch(request_id)):
                request_id = REDACTED
        raw = exchange.client_id
        client_id = None if raw is None else raw.decode("utf-8", "replace")
        raw = exchange.subject
        subject = None if raw is None else raw.decode("utf-8", "replace")
        upstream = exchange.upstream_seconds
        if upstream is None and exchange.upstream_started:
            upstream = seconds
        wall = exchange.wall
        clock = self._clock
        second = int(wall)
        if second != clock.second:
            clock.tick(second)
        when = f"{clock.prefix}.{int((wall - second) * 1000):03d}Z"
        if self.format == "json":
            # Written out by hand: json.dumps of a dict cost most of a request's log time.
            up = "null" if upstream is None else f"{upstream * 1000:.3f}"
            # The request id, peer address and method need no escaping: ids sent upstream
            # match [A-Za-z0-9._-]+, peers are IP addresses, methods HTTP tokens.
            rid = "null" if request_id is None else f'"{request_id}"'
            return (
                f'{{"time":"{when}","request_id":{rid},'
                f'"client":"{exchange.peer}","method":"{exchange.method}",'
                f'"path":{_json(path)},"status":{exchange.status},"bytes":{exchange.bytes},'
                f'"duration_ms":{seconds * 1000:.3f},"upstream_ms":{up},'
                f'"client_id":{_json(client_id)},"subject":{_json(subject)},'
                f'"route":"{exchange.route}","pid":{self.pid}}}'
            )
        up = "-" if upstream is None else f"{upstream * 1000:.1f}ms"
        return (
            f'{when} {exchange.peer or "-"} "{exchange.method} {path}" '
            f"{exchange.status} {exchange.bytes}B {seconds * 1000:.1f}ms upstream={up} "
            f"id={request_id or '-'} client={client_id or '-'} subject={subject or '-'}"
        )

    def _remember_path(self, path: str) -> str:
        """safe_path, remembered for paths of ordinary length (bounded)."""
        safe = self.safe_path(path)
        if len(path) <= _REMEMBERED_PATH:
            if len(self._paths) >= _REMEMBERED_PATHS:
                self._paths.clear()
            self._paths[path] = safe
        return safe

    def safe_path(self, path: str) -> str:
        path = path.split("?", 1)[0][:MAX_PATH]
        if "." not in path and not any(secret in path for secret in self.secrets):
            return path
        parts = path.split("/")
        return "/".join(REDACTED if (p in self.secrets or _JWT.fullmatch(p)) else p for p in parts)


class _Clock:
    """The date-and-second part of ISO 8601 times, formatted once per second (the
    milliseconds are added by RequestLog.line)."""

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def tick(self, second: int) -> None:
        self.second = second
        self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


_PLAIN = re.compile(r'[^"\\\x00-\x1f\x7f-\uffff]*')


def _json(value: str | None) -> str:
    if value is None:
        return "null"
    if _PLAIN.fullmatch(value):
        return f'"{value}"'
    return json.dumps(value)


def _iso(wall: float) -> str:
    seconds = int(wall)
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        + f".{int((wall - seconds) * 1000):03d}Z"
    )


class JsonFormatter(logging.Formatter):
    """The gateway's other log records as JSON lines (MCP_GATEWAY_LOG_FORMAT=json)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))
