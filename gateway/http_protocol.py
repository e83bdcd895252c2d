"""uvicorn's httptools protocol with each response written in one system call.

uvicorn writes a response as two `transport.write` calls (the head at
`http.response.start`, the body at `http.response.body`) and uvloop sends each one
straight away, so every small response cost two `write` syscalls (and two TLS records
under TLS). PERF.md's profile put ~38 % of the gateway's time in socket writes.

`CorkedTransport` buffers the writes made during one event-loop turn and hands them to
the real transport together from a `call_soon` callback, i.e. before the loop next
waits for I/O: a streamed chunk (an SSE event) still leaves in the turn it was sent.
It writes through at once when the buffered bytes reach `CORK_LIMIT` (so a large body
never piles up here and the real transport's pause_writing/resume_writing, which go
to the protocol, keep governing the sender), and before close, write_eof and
set_protocol. abort() drops what is buffered, as the real transport drops its own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

CORK_LIMIT = 64 * 1024
# A request line plus headers larger than this is refused with 431 (RFC 6585 §5).
# httptools sets no limit of its own and buffers a header until it ends, so one
# connection could otherwise make the gateway hold and parse hundreds of megabytes.
MAX_HEAD_BYTES = 64 * 1024
_HEAD_TOO_LARGE = (
    b'{"error":"invalid_request","error_description":"request line and headers exceed 65536 bytes"}'
)


class CorkedTransport(asyncio.Transport):
    """Coalesces the writes of one loop turn into one write on `transport`."""

    __slots__ = ("_loop", "_pending", "_pending_size", "_scheduled", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._scheduled = False

    @property
    def inner(self) -> asyncio.Transport:
        return self._transport

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._pending.append(bytes(data) if not isinstance(data, bytes) else data)
        self._pending_size += len(data)
        if self._pending_size >= CORK_LIMIT:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush_soon)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def _flush_soon(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        """Hand everything buffered to the real transport now."""
        pending = self._pending
        if not pending:
            return
        self._pending, self._pending_size = [], 0
        if self._transport.is_closing():
            return  # the connection is gone: the real transport would drop it too
        self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        return self._pending_size + self._transport.get_write_buffer_size()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending, self._pending_size = [], 0
        self._transport.abort()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.flush()
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()


class CorkedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's HttpToolsProtocol over a CorkedTransport (pass as `http=` to Config),
    refusing request heads over MAX_HEAD_BYTES."""

    # Bytes of an unfinished request head read so far; None while a head is complete
    # (its body, if any, is being read); -1 when a new head began inside the last chunk.
    _head_bytes: int | None = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_bytes = 0
        super().connection_made(CorkedTransport(transport, self.loop))

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Counted after parsing, so a chunk in which a head completes is not counted, and
        # a head that began inside a chunk starts its count with the next one: at most one
        # read (256 KiB) past the limit is ever parsed.
        if self._head_bytes is None or self.transport.is_closing():
            return
        if self._head_bytes < 0:
            self._head_bytes = 0
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse_head()

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._head_bytes = -1
        super().on_message_complete()

    def _refuse_head(self) -> None:
        self.logger.warning("Request head over %d bytes refused.", MAX_HEAD_BYTES)
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(_HEAD_TOO_LARGE)).encode() + b"\r\n\r\n" + _HEAD_TOO_LARGE
        )
        self.transport.close()
