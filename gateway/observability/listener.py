"""The metrics listener (MCP_GATEWAY_METRICS_ADDR): GET /metrics, nothing else.

A separate socket, never the public port, answering one request per connection in the
Prometheus text format. Bounded like everything else: a head of at most 8 KiB read
within 5 seconds, at most `MAX_CONNECTIONS` at once.
"""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

MAX_HEAD = 8192
HEAD_TIMEOUT = 5.0
MAX_CONNECTIONS = 16


class MetricsListener:
    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._open = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, limit=MAX_HEAD
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS:
            writer.close()
            return
        self._open += 1
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            parts = head.split(b"\r\n", 1)[0].split()
            target = parts[1].split(b"?", 1)[0] if len(parts) == 3 else b""
            if len(parts) == 3 and parts[0] in (b"GET", b"HEAD") and target == b"/metrics":
                body = generate_latest(self.registry)
                status, ctype = b"200 OK", CONTENT_TYPE_LATEST.encode()
                if parts[0] == b"HEAD":
                    writer.write(_head(status, ctype, len(body)))
                else:
                    writer.write(_head(status, ctype, len(body)) + body)
            else:
                body = b"only GET /metrics is served here\n"
                writer.write(_head(b"404 Not Found", b"text/plain", len(body)) + body)
            async with asyncio.timeout(HEAD_TIMEOUT):
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            self._open -= 1
            writer.close()


def _head(status: bytes, ctype: bytes, length: int) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: " + ctype
        + b"\r\ncontent-length: " + str(length).encode() + b"\r\nconnection: close\r\n\r\n"
    )  # fmt: skip
