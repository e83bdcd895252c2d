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

`fast_proxy_protocol` builds the protocol the gateway serves with: on top of the above,
a proxied request without a body skips ASGI altogether and is answered from the parser
callback by the proxy's own pipeline (`ProxyApp.start`), which cut the CPU per proxied
request by about a fifth (bench/README.md); everything else takes uvicorn's ASGI path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Protocol
from urllib.parse import unquote

import httptools
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE as _NAME,
)
from uvicorn.protocols.http.httptools_impl import (
    HEADER_VALUE_RE as _VALUE,
)
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
)

from gateway.proxy.app import Found, scan
from gateway.proxy.forward import Client

Header = tuple[bytes, bytes]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

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


class ProxyHandler(Protocol):
    """What the fast path calls: `gateway.proxy.ProxyApp.start`."""

    def start(
        self,
        method: str,
        raw_path: bytes,
        query: bytes,
        headers: list[Header],
        peer: str,
        found: Found,
        client: Client,
    ) -> None: ...


def fast_proxy_protocol(
    proxy: ProxyHandler,
    routes: Callable[[str], bool],
    *,
    https_headers: Sequence[Header] = (),
) -> type[CorkedHttpToolsProtocol]:
    """A CorkedHttpToolsProtocol that serves proxied requests without ASGI (PERF.md).

    A request without a body whose (percent-decoded) path `routes` accepts goes from the
    parser callback straight to `proxy.start`, which runs the proxy pipeline and, for a
    response that arrives whole, answers through a FastExchange without any coroutine:
    no ASGI scope, RequestResponseCycle, Event or task. Anything longer (a streamed
    body, a new upstream connection, a slow client) continues in a task through the
    exchange's ASGI-shaped receive/send. Everything else (request bodies, HTTP/1.0,
    upgrades, Expect, a request pipelined behind one still being answered, concurrency
    limits or access logs) takes uvicorn's ASGI path unchanged. `https_headers` are added
    to responses on TLS connections (HSTS, as HSTSMiddleware does on the ASGI path).
    """
    extra = list(https_headers)

    class FastProxyProtocol(_FastProxyProtocol):
        _proxy = proxy
        _routes = staticmethod(routes)
        _https_headers = extra

    return FastProxyProtocol


class _FastProxyProtocol(CorkedHttpToolsProtocol):
    _proxy: ProxyHandler
    _routes: Callable[[str], bool]
    _https_headers: list[Header]

    def on_message_begin(self) -> None:
        # The scope is built only when a request takes the ASGI path (_to_asgi).
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        parser = self.parser
        if (
            (self.cycle is None or self.cycle.response_complete)
            and not self.expect_100_continue
            and self.limit_concurrency is None
            and not self.access_log
            and parser.get_http_version() == "1.1"
            and not parser.should_upgrade()
        ):
            try:
                url = httptools.parse_url(self.url)
                path = url.path.decode("ascii")
            except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
                path = None
            if path is not None and self._routes(unquote(path) if "%" in path else path):
                found = scan(self.headers)
                if not found.has_body:
                    self._start_fast(parser.get_method(), url.path, url.query or b"", found)
                    return
        self._to_asgi()

    def _to_asgi(self) -> None:
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        HttpToolsProtocol.on_message_begin(self)
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers
        HttpToolsProtocol.on_headers_complete(self)

    def _start_fast(self, method: bytes, raw_path: bytes, query: bytes, found: Found) -> None:
        self._unset_keepalive_if_required()  # a pipelined request in the same read
        extra = self.server_state.default_headers
        if self.scheme == "https" and self._https_headers:
            extra = extra + self._https_headers
        exchange = FastExchange(self, method == b"HEAD", self.parser.should_keep_alive(), extra)
        self.cycle = exchange  # type: ignore[assignment]
        client = self.client
        try:
            self._proxy.start(
                method.decode("ascii"), raw_path, query, exchange.request_headers,
                client[0] if client else "", found, exchange,
            )  # fmt: skip
        except Exception as exc:
            exchange.fail(exc)


class FastExchange:
    """One request on the fast path, and the `gateway.proxy.forward.Client` it is
    answered through: writes go straight to the (corked) transport with uvicorn's
    framing rules, and a longer exchange continues in a task through the ASGI-shaped
    `receive`/`send` below, with uvicorn's flow control. It also has the attributes of
    uvicorn's RequestResponseCycle that HttpToolsProtocol touches: it sets
    `disconnected` and calls `message_event.set()` when the connection is lost."""

    __slots__ = (
        "body",
        "chunked",
        "disconnected",
        "extra",
        "gone",
        "gone_callback",
        "head",
        "keep_alive",
        "message_event",
        "more_body",
        "protocol",
        "request_headers",
        "response_complete",
        "response_started",
    )

    def __init__(
        self, protocol: _FastProxyProtocol, head: bool, keep_alive: bool, extra: list[Header]
    ) -> None:
        self.protocol = protocol
        self.request_headers: list[Header] = protocol.headers
        self.head = head
        self.keep_alive = keep_alive
        self.extra = extra
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.chunked = False
        self.more_body = False
        self.body = bytearray()
        self.message_event = self
        self.gone: asyncio.Future[None] | None = None
        self.gone_callback: Callable[[], None] | None = None

    # forward.Client
    def writable(self) -> bool:
        return not self.disconnected and not self.protocol.flow.write_paused

    def respond(self, status: int, headers: list[Header], body: bytes) -> None:
        if self.disconnected:
            return
        try:
            head = self._head(status, headers)
        except RuntimeError as exc:
            self.fail(exc)
            return
        self.response_started = True
        self.protocol.transport.write(head + self._frame(body, False))
        self._complete()

    def relay(self, run: Callable[[Receive, Send], Awaitable[None]]) -> None:
        protocol = self.protocol
        task = protocol.loop.create_task(self._run(run))
        task.add_done_callback(protocol.tasks.discard)
        protocol.tasks.add(task)

    def on_gone(self, callback: Callable[[], None] | None) -> None:
        self.gone_callback = callback

    # uvicorn's RequestResponseCycle.message_event
    def set(self) -> None:
        if not self.disconnected:
            return
        callback, self.gone_callback = self.gone_callback, None
        if callback is not None:
            callback()
        gone = self.gone
        if gone is not None and not gone.done():
            gone.set_result(None)

    async def _run(self, run: Callable[[Receive, Send], Awaitable[None]]) -> None:
        try:
            await run(self.receive, self.send)
        except Exception as exc:
            self.fail(exc)
        else:
            if not self.response_complete and not self.disconnected:
                self.protocol.transport.close()  # an incomplete response must not look whole

    def fail(self, exc: Exception) -> None:
        """An unexpected error: 500 if nothing was sent yet, else the connection closes."""
        self.protocol.logger.error("Exception in the proxy fast path", exc_info=exc)
        if self.response_started or self.disconnected or self.response_complete:
            self.protocol.transport.close()
            return
        self.keep_alive, self.chunked = False, False
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"21")]
        self.respond(500, headers, b"Internal Server Error")

    async def receive(self) -> dict[str, Any]:
        """The request has no body: receive() only ever reports the disconnect."""
        if not self.disconnected and not self.response_complete:
            gone = self.gone
            if gone is None or gone.done():
                gone = self.gone = self.protocol.loop.create_future()
            await gone
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        protocol = self.protocol
        if protocol.flow.write_paused and not self.disconnected:
            await protocol.flow.drain()
        if self.disconnected:
            return
        if not self.response_started:
            self.response_started = True
            protocol.transport.write(self._head(message["status"], message["headers"]))
            return
        if self.response_complete:
            raise RuntimeError("the response was already completed")
        more_body: bool = message.get("more_body", False)
        data = self._frame(message.get("body", b""), more_body)
        if data:
            protocol.transport.write(data)
        if not more_body:
            self._complete()

    def _head(self, status: int, headers: list[Header]) -> bytes:
        content = [STATUS_LINE.get(status) or b"HTTP/1.1 %d \r\n" % status]
        framed = False
        for name, value in (*self.extra, *headers):
            if _VALUE.search(value) or _NAME.search(name):
                raise RuntimeError("Invalid HTTP header.")
            if name == b"content-length":
                framed = True
            elif name == b"transfer-encoding":
                framed = self.chunked = value.lower() == b"chunked"
            elif name == b"connection" and b"close" in value.lower():
                self.keep_alive = False
            content += (name, b": ", value, b"\r\n")
        if not self.keep_alive:
            content.append(b"connection: close\r\n")
        if not framed and not self.head and status not in (204, 304):
            self.chunked = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        return b"".join(content)

    def _frame(self, body: bytes, more_body: bool) -> bytes:
        if self.head:
            return b""
        if not self.chunked:
            return body
        data = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
        return data if more_body else data + b"0\r\n\r\n"

    def _complete(self) -> None:
        self.response_complete = True
        protocol = self.protocol
        if not self.keep_alive:
            protocol.transport.close()
        protocol.on_response_complete()
