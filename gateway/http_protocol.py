"""uvicorn's httptools protocol with each response written in one system call.

uvicorn writes a response as two `transport.write` calls (the head at
`http.response.start`, the body at `http.response.body`) and uvloop sends each one
straight away, so every small response cost two `write` syscalls (and two TLS records
under TLS). docs/performance.md's profile put ~38 % of the gateway's time in socket writes.

`CorkedTransport` buffers the writes made during one event-loop turn and hands them to
the real transport together at the turn's end (gateway.proxy.turns: one `call_soon`
for all the connections of a server, which also writes their sockets back to back),
i.e. before the loop next waits for I/O: a streamed chunk (an SSE event) still leaves
in the turn it was sent.
It writes through at once when the buffered bytes reach `CORK_LIMIT` (so a large body
never piles up here and the real transport's pause_writing/resume_writing, which go
to the protocol, keep governing the sender), and before close, write_eof and
set_protocol. abort() drops what is buffered, as the real transport drops its own.

`fast_proxy_protocol` builds the protocol the gateway serves with: on top of the above,
a proxied request without a body skips ASGI altogether and is answered from the parser
callback by the proxy's own pipeline (`ProxyApp.start`), which cut the CPU per proxied
request by about a fifth (bench/README.md); everything else takes uvicorn's ASGI path.

Both protocols enforce the edge budgets (gateway.edge.EdgeLimits, docs/edge.md): head,
body and send timeouts, the pipelining hold, the head and trailer byte limits, the Host
rule and the connection caps; uvicorn's internals come from gateway.uvicorn_fence.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, ClassVar, Protocol
from urllib.parse import unquote

import httptools

from gateway.edge import ConnectionLimiter, EdgeLimits
from gateway.errors import (
    GatewayError,
    InternalError,
    InvalidRequest,
    TemporarilyUnavailable,
    render,
)
from gateway.proxy.app import Found, scan
from gateway.proxy.forward import Client
from gateway.proxy.turns import TurnWrites
from gateway.uvicorn_fence import HEADER_RE as _NAME
from gateway.uvicorn_fence import HEADER_VALUE_RE as _VALUE
from gateway.uvicorn_fence import STATUS_LINE, FlowControl, HttpToolsProtocol

Header = tuple[bytes, bytes]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

CORK_LIMIT = 64 * 1024
# A request line plus headers larger than this is refused with 431 (RFC 6585 §5).
# httptools sets no limit of its own and buffers a header until it ends, so one
# connection could otherwise make the gateway hold and parse hundreds of megabytes.
MAX_HEAD_BYTES = EdgeLimits.max_head_bytes
# Input is parsed this many bytes at a time, so a hold (see CorkedHttpToolsProtocol)
# takes effect within a few dozen pipelined requests of a read, not 256 KiB of them.
SLICE = 2048
# Requests parsed from one read before the rest waits for the next loop turn, so a read
# full of pipelined requests cannot keep the loop (and every other connection) waiting.
REQUESTS_PER_TURN = 32
# A request body up to this size, with a Content-Length, is read whole inside the
# protocol and forwarded in one write with the head (no ASGI cycle); larger or chunked
# bodies stream through the ASGI path. Below the JSON-RPC inspection cap (4 MiB).
FAST_BODY_LIMIT = 256 * 1024
# The fast path remembers which raw paths `routes` sends to the proxy: this many, of at
# most this length (longer ones are decided each time).
ROUTE_MEMO_SIZE = 4096
ROUTE_MEMO_KEY_BYTES = 256


class CorkedTransport(asyncio.Transport):
    """Coalesces the writes of one loop turn into one write on `transport`, made when
    `turn` (shared by a server's connections) flushes at the turn's end."""

    __slots__ = ("_loop", "_pending", "_pending_size", "_scheduled", "_transport", "_turn")

    def __init__(
        self,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        turn: TurnWrites | None = None,
    ) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._turn = turn if turn is not None else TurnWrites()
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
            self._turn.add(self._loop, self)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush_turn(self) -> None:
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


class GatedFlowControl(FlowControl):
    """uvicorn's flow control, except that the transport's reading follows both it and
    the protocol's own hold (`_sync_reading`): uvicorn resuming reads for a request body
    cannot undo a hold on pipelined input, nor the reverse."""

    def __init__(self, transport: asyncio.Transport, protocol: CorkedHttpToolsProtocol) -> None:
        super().__init__(transport)
        self._protocol = protocol

    def pause_reading(self) -> None:
        self.read_paused = True
        self._protocol._sync_reading()

    def resume_reading(self) -> None:
        self.read_paused = False
        self._protocol._sync_reading()


class _Refused(InternalError):
    """Raised inside a parser callback after a refusal was written: stops the parse."""


def _json_error(status: int, error: GatewayError) -> bytes:
    """A refusal written straight to the socket (then closed): gateway.errors.render's
    answer with `status` as the status line."""
    _, headers, body = render(error, status=status, extra=[(b"connection", b"close")])
    lines = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return STATUS_LINE[status] + lines + b"\r\n" + body


_BUSY = _json_error(503, TemporarilyUnavailable("too many connections; try again shortly"))
_HEAD_TIMEOUT = _json_error(408, InvalidRequest("the request head did not arrive in time"))
_BODY_TIMEOUT = _json_error(408, InvalidRequest("the request body did not arrive in time"))
_BAD_HOST = _json_error(400, InvalidRequest("an HTTP/1.1 request needs exactly one Host"))


class CorkedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's HttpToolsProtocol over a CorkedTransport (pass as `http=` to Config),
    with the edge budgets of `limits` (gateway.edge.EdgeLimits):

    - input is parsed in slices of SLICE bytes; before each, reading is held (the rest
      kept, the socket paused) while `max_pipelined` requests wait behind the one being
      answered or the client is not reading its responses (write buffer at CORK_LIMIT or
      the transport paused writing), so neither locally answered nor pipelined requests
      can pile up responses or request state; it resumes when they drain;
    - the head (request line + headers) is refused with 431 past `max_head_bytes`, and a
      body's chunk framing + trailers likewise (trailer fields are dropped, never merged
      into the request's headers); an HTTP/1.1 head without exactly one Host gets 400;
    - timers: the head within `head_timeout` (an idle new connection too), a body idle
      for `body_idle_timeout` or unfinished after `body_timeout` gets 408, a response
      unread for `send_timeout` is aborted;
    - `admission` (a ConnectionLimiter), when set, refuses connections over its caps with
      503 + close.
    """

    limits: ClassVar[EdgeLimits] = EdgeLimits()
    admission: ClassVar[ConnectionLimiter | None] = None
    # The server's connections flush their corked writes together (gateway.proxy.turns);
    # unset, each connection flushes on its own.
    turn: ClassVar[TurnWrites | None] = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._held = False
        self._stash = b""
        self._stash_at = 0  # where the unparsed part of _stash begins
        self._reading = True
        self._refused = False
        self._pump_scheduled = False
        self._in_body = False
        self._in_head = False
        self._hosts = 0
        self._completed = 0
        self._head_bytes = 0
        self._frame_bytes = 0
        self._body_bytes = 0
        self._body_started = 0.0
        self._last_data = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._address: str | None = None
        self._admitted = False
        self._raw = transport  # for the per-request is_closing() checks: no Python layer
        self._idle_since = 0.0
        self._cork = CorkedTransport(transport, self.loop, self.turn)
        super().connection_made(self._cork)
        self.flow = GatedFlowControl(self.transport, self)
        admission = self.admission
        if admission is not None:
            key = admission.key(self.client[0] if self.client else "")
            if not admission.admit(key):
                self.logger.debug("connection from %s refused: too many connections", key)
                self._refused = True
                self.transport.write(_BUSY)
                self.transport.close()
                return
            self._address, self._admitted = key, True
        self._arm(self.limits.head_timeout, self._head_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        if self._admitted and self.admission is not None:
            self.admission.release(self._address)
            self._admitted = False
        self._stash = b""
        super().connection_lost(exc)

    # Reading: slices, holds and byte budgets

    def data_received(self, data: bytes) -> None:
        if self._refused or self._raw.is_closing():
            return
        if self._held:  # at most a read or two more: reading is paused
            self._stash, self._stash_at = self._stash[self._stash_at :] + data, 0
            self._sync_reading()
            return
        self._feed(data)

    def _feed(self, data: bytes, pos: int = 0) -> None:
        limits, size = self.limits, len(data)
        flow, pipeline = self.flow, self.pipeline
        cork, raw, parser = self._cork, self._raw, self.parser
        turn_ends = self._completed + REQUESTS_PER_TURN
        while pos < size:
            if (
                flow.write_paused
                or len(pipeline) >= limits.max_pipelined
                or cork._pending_size + raw.get_write_buffer_size() >= CORK_LIMIT
                or self._completed >= turn_ends  # the rest in the next turn (_pump)
            ):
                self._hold(data, pos)
                return
            piece = data if pos == 0 and size <= SLICE else data[pos : pos + SLICE]
            pos += len(piece)
            in_body = self._in_body
            if in_body:
                body_before = self._body_bytes
                self._last_data = self.loop.time()
            try:  # _parse, inline for the common case
                parser.feed_data(piece)
            except (httptools.HttpParserUpgrade, httptools.HttpParserError) as exc:
                self._parse_failed(exc)
                return
            if raw.is_closing():
                return
            if in_body != self._in_body:  # a head or body ended in this slice
                if self._timer is None and self._in_body:
                    self._arm_body()
                continue  # at most SLICE bytes of it uncounted
            if in_body:
                self._frame_bytes += len(piece) - (self._body_bytes - body_before)
                if self._frame_bytes > limits.max_head_bytes:
                    self._refuse_head("chunk framing and trailers")
                    return
            elif self._in_head:  # a head still arriving
                if self._timer is None:
                    self._arm(limits.head_timeout, self._head_expired)
                self._head_bytes += len(piece)
                if self._head_bytes > limits.max_head_bytes:
                    self._refuse_head("request line and headers")
                    return

    def _parse_failed(self, exc: Exception) -> None:
        """The parser stopped: an upgrade request, or input that is not HTTP."""
        if isinstance(exc, httptools.HttpParserUpgrade):
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        elif not self._refused:
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)

    def _must_hold(self) -> bool:
        return (
            len(self.pipeline) >= self.limits.max_pipelined
            or self.flow.write_paused
            or self.transport.get_write_buffer_size() >= CORK_LIMIT
        )

    def _hold(self, data: bytes, pos: int) -> None:
        self._held = True
        self._stash, self._stash_at = data, pos  # not copied: sliced as it is parsed
        self._sync_reading()
        # Woken by on_response_complete or resume_writing; this first look also catches
        # a write buffer that drained into the socket without the transport pausing.
        self._schedule_pump()

    def _schedule_pump(self) -> None:
        if not self._pump_scheduled:
            self._pump_scheduled = True
            self.loop.call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_scheduled = False
        if not self._held or self.transport.is_closing():
            return
        if self._must_hold():
            if not self.flow.write_paused and len(self.pipeline) < self.limits.max_pipelined:
                # buffered past CORK_LIMIT without a pause: look again shortly
                self.loop.call_later(0.01, self._schedule_pump)
            return
        self._held = False
        data, pos, self._stash, self._stash_at = self._stash, self._stash_at, b"", 0
        self._sync_reading()
        if pos < len(data):
            self._feed(data, pos)

    def _sync_reading(self) -> None:
        paused = self.flow.read_paused or self._held
        if paused != self._reading or self.transport.is_closing():
            return
        if paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()
        self._reading = not paused

    # Parser callbacks

    def on_message_begin(self) -> None:
        self._in_head, self._hosts = True, 0
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's on_header (inlined: it runs for every header), plus Host counted and
        # trailer fields (after the head) dropped: counted with the framing, never merged.
        if self._in_body:
            return
        name = name.lower()
        if name == b"host":
            self._hosts += 1
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._head_done()
        super().on_headers_complete()

    def _head_done(self) -> None:
        """The head is complete: check Host, start the body's budget."""
        if self._hosts != 1 and self.parser.get_http_version() == "1.1":
            self._refuse(_BAD_HOST, "HTTP/1.1 request with %d Host headers refused", self._hosts)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._in_head, self._in_body = False, True
        self._head_bytes = self._frame_bytes = self._body_bytes = 0

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._message_done()
        super().on_message_complete()

    def _message_done(self) -> None:
        self._in_body = False
        self._completed += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def on_response_complete(self) -> None:
        # uvicorn's, except that the keep-alive timer is armed only when none is: it is
        # not cancelled when the next request comes (a timer costs ~2.6 µs to arm and
        # cancel), and looks at the connection's state when it is due (_keep_alive_due).
        self.server_state.total_requests += 1
        if self._raw.is_closing():
            return
        flow = self.flow
        if flow.read_paused:
            flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._idle_since = self.loop.time()
            if self.timeout_keep_alive_task is None:
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self._keep_alive_due
                )
        if self._held:
            self._schedule_pump()

    def _unset_keepalive_if_required(self) -> None:
        """uvicorn calls this when a request starts; the lazy keep-alive timer needs no
        cancelling (see on_response_complete)."""

    def _keep_alive_due(self) -> None:
        """Close a connection idle for the keep-alive timeout since its last response;
        a request in progress is governed by its own timers and re-arms this when its
        response completes."""
        self.timeout_keep_alive_task = None
        if self._raw.is_closing():
            return
        cycle = self.cycle
        if (
            (cycle is not None and not cycle.response_complete)
            or self._in_head
            or self._in_body
            or self.pipeline
        ):
            return
        left = self._idle_since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_due)
            return
        self.timeout_keep_alive_handler()

    # Writing

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.limits.send_timeout, self._send_expired)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        if self._held:
            self._schedule_pump()

    # Timers and refusals

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(delay, callback)

    def _arm_body(self) -> None:
        self._body_started = self._last_data = self.loop.time()
        self._arm(self.limits.body_idle_timeout, self._body_expired)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _cancel_timers(self) -> None:
        self._cancel_timer()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _head_expired(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._held:  # we stopped reading, the client is not late
            self._arm(self.limits.head_timeout, self._head_expired)
            return
        if not self._in_head:
            self.logger.debug("idle connection closed after %.0f s", self.limits.head_timeout)
            self.transport.close()
            return
        self.logger.debug("request head not complete within %.0f s", self.limits.head_timeout)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # An earlier request is still being answered: finish it, read nothing more,
            # then close (no 408 in the middle of its response).
            self._refused = True
            cycle.keep_alive = False
            return
        self._close_with(_HEAD_TIMEOUT)

    def _body_expired(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        limits, now = self.limits, self.loop.time()
        if self._held or self.flow.read_paused:  # the application is not reading yet
            self._body_started = self._last_data = now
        idle_at = self._last_data + limits.body_idle_timeout
        whole_at = self._body_started + limits.body_timeout
        due = min(idle_at, whole_at)
        if now < due:
            self._timer = self.loop.call_later(due - now, self._body_expired)
            return
        self.logger.debug("request body too slow: closed with 408")
        self._close_with(_BODY_TIMEOUT)

    def _send_expired(self) -> None:
        self._write_timer = None
        if self.flow.write_paused and not self.transport.is_closing():
            self.logger.debug("client not reading for %.0f s: aborted", self.limits.send_timeout)
            self.transport.abort()

    def _close_with(self, response: bytes) -> None:
        """Answer `response` (a whole response) and close. The answer is left out when
        the current request was already answered (its unread body timed out), and
        replaces the application's answer when that has not started yet."""
        self._refused = True
        cycle = self.cycle
        current = self._in_body and cycle is not None
        if not current or not (cycle.response_started or cycle.response_complete):
            if current:
                cycle.response_started = True  # the application's answer is dropped
            self.transport.write(response)
        self.transport.close()

    def _refuse(self, response: bytes, message: str, *args: object) -> None:
        self.logger.warning(message, *args)
        self._close_with(response)
        raise _Refused

    def _refuse_head(self, what: str) -> None:
        limit = self.limits.max_head_bytes
        self.logger.warning("Request %s over %d bytes refused.", what, limit)
        self._close_with(_json_error(431, InvalidRequest(f"{what} exceed {limit} bytes")))


class ProxyHandler(Protocol):
    """What the fast path calls: `gateway.proxy.ProxyApp.start` for a request without a
    body; `begin` at the head and `finish` with the body for a small body."""

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

    def begin(
        self,
        method: str,
        raw_path: bytes,
        query: bytes,
        headers: list[Header],
        peer: str,
        found: Found,
        client: Client,
    ) -> Any: ...

    def finish(self, admitted: Any, body: bytes, client: Client) -> None: ...


def small_body(found: Found) -> bool:
    """A body the fast path reads whole before forwarding: a Content-Length up to
    FAST_BODY_LIMIT and no Transfer-Encoding (pure)."""
    length = found.content_length
    if length is None or len(length) > 7 or int(length) > FAST_BODY_LIMIT:
        return False
    return not found.chunked


def edge_protocol(
    limits: EdgeLimits, admission: ConnectionLimiter | None = None
) -> type[CorkedHttpToolsProtocol]:
    """The plain ASGI-path protocol with these budgets (MCP_GATEWAY_FAST_PATH=off)."""

    class EdgeProtocol(CorkedHttpToolsProtocol):
        pass

    EdgeProtocol.limits, EdgeProtocol.admission = limits, admission
    EdgeProtocol.turn = TurnWrites()
    return EdgeProtocol


def fast_proxy_protocol(
    proxy: ProxyHandler,
    routes: Callable[[str], bool],
    *,
    https_headers: Sequence[Header] = (),
    limits: EdgeLimits | None = None,
    admission: ConnectionLimiter | None = None,
) -> type[CorkedHttpToolsProtocol]:
    """A CorkedHttpToolsProtocol that serves proxied requests without ASGI (docs/performance.md).

    A request without a body whose (percent-decoded) path `routes` accepts goes from the
    parser callback straight to `proxy.start`, which runs the proxy pipeline and, for a
    response that arrives whole, answers through a FastExchange without any coroutine:
    no ASGI scope, RequestResponseCycle, Event or task. Anything longer (a streamed
    body, a new upstream connection, a slow client) continues in a task through the
    exchange's ASGI-shaped receive/send. Everything else (request bodies, HTTP/1.0,
    upgrades, Expect, a request pipelined behind one still being answered, concurrency
    limits) takes uvicorn's ASGI path unchanged. uvicorn's access log is not consulted:
    the gateway never turns it on (its request log, gateway.observability, covers both
    paths), and it used to send every request to the ASGI path in any process where the
    `uvicorn.access` logger had a handler (pytest's log capture adds one). `https_headers` are added
    to responses on TLS connections (HSTS, as HSTSMiddleware does on the ASGI path).
    """
    extra = list(https_headers)

    class FastProxyProtocol(_FastProxyProtocol):
        _proxy = proxy
        _routes = staticmethod(routes)
        _https_headers = extra
        _route_memo: dict[bytes, bool] = {}  # this server's: raw path → routes(path)

    FastProxyProtocol.limits = limits or EdgeLimits()
    FastProxyProtocol.admission = admission
    FastProxyProtocol.turn = TurnWrites()
    return FastProxyProtocol


def _target(url: bytes) -> tuple[bytes, bytes] | None:
    """(raw path, query) of a request target; None when it is not one httptools can
    parse. An origin-form target ("/path?query", what clients send) is split here;
    anything else goes through httptools.parse_url."""
    if url[:1] == b"/" and b"#" not in url:
        path, _, query = url.partition(b"?")
        return path, query
    try:
        parsed = httptools.parse_url(url)
    except httptools.HttpParserInvalidURLError:
        return None
    return parsed.path, parsed.query or b""


class _FastProxyProtocol(CorkedHttpToolsProtocol):
    _proxy: ProxyHandler
    _routes: Callable[[str], bool]
    _https_headers: list[Header]
    _route_memo: dict[bytes, bool]

    def on_message_begin(self) -> None:
        # The scope is built only when a request takes the ASGI path (_to_asgi).
        self._in_head, self._hosts = True, 0
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def on_headers_complete(self) -> None:
        self._head_done()
        parser = self.parser
        if (
            (self.cycle is None or self.cycle.response_complete)
            and not self.expect_100_continue
            and self.limit_concurrency is None
            and parser.get_http_version() == "1.1"
            and not parser.should_upgrade()
        ):
            target = _target(self.url)
            if target is not None and self._proxied(target[0]):
                found = scan(self.headers)
                if not found.has_body:
                    self._start_fast(parser.get_method(), target[0], target[1], found)
                    return
                if small_body(found):
                    self._start_fast(parser.get_method(), target[0], target[1], found, True)
                    return
        self._to_asgi()

    def _proxied(self, raw_path: bytes) -> bool:
        """`routes` of the percent-decoded path, remembered per raw path (bounded)."""
        known = self._route_memo.get(raw_path)
        if known is None:
            try:
                path = raw_path.decode("ascii")
            except UnicodeDecodeError:
                return False  # the ASGI path answers it
            known = self._routes(unquote(path) if "%" in path else path)
            if len(raw_path) <= ROUTE_MEMO_KEY_BYTES:
                if len(self._route_memo) >= ROUTE_MEMO_SIZE:
                    self._route_memo.clear()
                self._route_memo[raw_path] = known
        return known

    def _to_asgi(self) -> None:
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        HttpToolsProtocol.on_message_begin(self)
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers
        HttpToolsProtocol.on_headers_complete(self)

    def _start_fast(
        self, method: bytes, raw_path: bytes, query: bytes, found: Found, body: bool = False
    ) -> None:
        extra = self.server_state.default_headers
        if self.scheme == "https" and self._https_headers:
            extra = extra + self._https_headers
        exchange = FastExchange(self, method == b"HEAD", self.parser.should_keep_alive(), extra)
        self.cycle = exchange  # type: ignore[assignment]
        client = self.client
        peer = client[0] if client else ""
        try:
            if body:  # admitted now (before the body, as on the ASGI path), finished below
                exchange.pending = self._proxy.begin(
                    method.decode("ascii"), raw_path, query, exchange.request_headers,
                    peer, found, exchange,
                )  # fmt: skip
                exchange.more_body = exchange.pending is not None
            else:
                self._proxy.start(
                    method.decode("ascii"), raw_path, query, exchange.request_headers,
                    peer, found, exchange,
                )  # fmt: skip
        except Exception as exc:
            exchange.fail(exc)

    def on_body(self, body: bytes) -> None:
        exchange: Any = self.cycle
        if exchange.__class__ is FastExchange and exchange.pending is not None:
            self._body_bytes += len(body)  # as CorkedHttpToolsProtocol.on_body counts
            exchange.parts.append(body)  # FAST_BODY_LIMIT bytes in all, at most
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        exchange: Any = self.cycle
        if exchange.__class__ is not FastExchange:
            super().on_message_complete()
            return
        # uvicorn's on_message_complete, for an exchange that is never an upgrade and
        # whose message_event wakes nothing until the client leaves: more_body only.
        self._message_done()
        exchange.more_body = False
        if exchange.pending is None:
            return
        admitted, exchange.pending = exchange.pending, None
        parts, exchange.parts = exchange.parts, []
        exchange.more_body = False
        if exchange.disconnected or exchange.response_complete:
            return
        try:
            self._proxy.finish(admitted, parts[0] if len(parts) == 1 else b"".join(parts), exchange)
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
        "more_body",
        "parts",
        "pending",
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
        self.parts: list[bytes] = []  # a small body being read (`pending` is set)
        self.pending: Any = None  # ProxyHandler.begin's answer until the body is whole
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

    @property
    def message_event(self) -> FastExchange:
        """uvicorn's RequestResponseCycle.message_event (a property: an attribute holding
        self would make every exchange a reference cycle, freed only by the collector)."""
        return self

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
        """The request's body, if any, is already in hand: receive() only ever reports
        the disconnect."""
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
        pairs = (*self.extra, *headers)
        # uvicorn's header checks, one search for all names and one for all values: the
        # separators are bytes each pattern allows, so a match is a match in one header.
        if _VALUE.search(b"\t".join([value for _, value in pairs])) or _NAME.search(
            b"-".join([name for name, _ in pairs])
        ):
            raise RuntimeError("Invalid HTTP header.")
        for name, value in pairs:
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
        self.gone_callback = None  # the exchange is over: its waiters are not called
        protocol = self.protocol
        if not self.keep_alive:
            protocol.transport.close()
        protocol.on_response_complete()
