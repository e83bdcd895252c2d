"""PROTOCOL P3, P4: one request/response exchange with the upstream, streamed both ways.

Memory stays bounded: request body chunks are written as they arrive with the upstream
socket's backpressure (`drain`), response chunks are handed to the client as they are
parsed and the upstream socket is not read while the client is slow. There is no limit
on a stream's total length: only connect, response-header and idle timeouts.

A client disconnect aborts the upstream connection, so the backend sees it too. The
watcher that notices it costs a task, so it only runs for streamed responses, or once a
response has taken longer than WATCH_AFTER seconds to start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any, Protocol

from gateway.errors import GatewayError, render
from gateway.proxy.deadlines import Deadlines
from gateway.proxy.errors import ClientGone, GatewayTimeout, StaleConnection
from gateway.proxy.replies import send_answer
from gateway.proxy.turns import TurnWrites
from gateway.proxy.upstream import NO_ANSWER, UpstreamConnection, UpstreamPool

Header = tuple[bytes, bytes]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
WATCH_AFTER = 0.05
_CRLF = b"\r\n"


class Outgoing:
    """A request as it goes upstream. `body` is None when it streams from the client.

    A plain slotted class: one is built per request, and a frozen dataclass's
    __init__ (object.__setattr__ per field) costs several times more."""

    __slots__ = (
        "body",
        "content_length",
        "headers",
        "identity",
        "method",
        "request_id",
        "response_extra",
        "target",
    )

    def __init__(
        self,
        method: str,
        target: bytes,
        headers: list[Header],
        body: bytes | None,
        content_length: bytes | None = None,
        response_extra: list[Header] | None = None,
        *,
        request_id: bytes | None = None,
        identity: list[Header] | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.content_length = content_length
        self.response_extra = response_extra if response_extra is not None else []
        # What `headers` carry, for the request record (gateway.observability): the
        # X-Request-Id value and the identity headers (subject, client id, ...), if known.
        self.request_id = request_id
        self.identity = identity


class Client(Protocol):
    """The client side of an exchange started by `Forwarder.start` (the server protocol's
    fast path: gateway.http_protocol.FastExchange)."""

    def writable(self) -> bool:
        """The connection is open and its write buffer is not over the high-water mark."""
        ...

    def respond(self, status: int, headers: list[Header], body: bytes) -> None:
        """Write a whole response now; the exchange is complete, so the `on_gone`
        callback, if any, is dropped (a later disconnect is no one's business)."""
        ...

    def relay(self, run: Callable[[Receive, Send], Awaitable[None]]) -> None:
        """Continue on the coroutine path: `run(receive, send)` in a task."""
        ...

    def on_gone(self, callback: Callable[[], None] | None) -> None:
        """Call `callback` if the client disconnects (None: no longer)."""
        ...


class Upstream(Protocol):
    """The upstream client the proxy forwards through: `Forwarder` (the pooled HTTP/1.1
    client, what `gateway serve` uses) or `gateway.proxy.inprocess.ASGIUpstream` (an
    ASGI application in the same process). Given to `create_app(..., upstream=...)`."""

    async def __call__(self, request: Outgoing, receive: Receive, send: Send) -> None:
        """The exchange on the coroutine path; upstream failures raise ProxyError."""
        ...

    async def relay(self, request: Outgoing, receive: Receive, send: Send) -> None:
        """The exchange, answering upstream failures (P4) itself."""
        ...

    def start(self, request: Outgoing, client: Client) -> None:
        """The fast path's entry: answer through `client` (or `client.relay`)."""
        ...

    async def aclose(self) -> None: ...


class Forwarder:
    def __init__(
        self, pool: UpstreamPool, *, host: bytes, header_timeout: float, idle_timeout: float
    ) -> None:
        self.pool = pool
        self.host_line = b"host: " + host + _CRLF
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        # The fast path's response-header timeouts (Waiting), all one length: one timer.
        self.deadlines = Deadlines(header_timeout)
        # Forwarded requests are written together when the loop turn ends.
        self.turn = TurnWrites()

    async def __call__(
        self,
        request: Outgoing,
        receive: Receive,
        send: Send,
        conn: UpstreamConnection | None = None,
    ) -> None:
        """The exchange; `conn` is a connection whose response head has already been
        read for this request (the fast path hands over a streamed response so)."""
        gone = asyncio.Event()
        if conn is None:
            conn = await self._exchange(request, receive, gone)
        watcher: asyncio.Task[None] | None = None
        try:
            if request.method == "HEAD":
                conn.end_without_body()
            start = {"type": "http.response.start", "status": conn.status}
            start["headers"] = conn.response_headers() + request.response_extra
            if conn.done:
                await send(start)
                body = b"".join(conn.chunks) if len(conn.chunks) != 1 else conn.chunks[0]
                conn.chunks = []
                await send({"type": "http.response.body", "body": body})
            else:
                watcher = conn.loop.create_task(_watch(receive, conn, gone))
                await send(start)
                try:
                    await self._stream(conn, send, gone)
                except ClientGone:
                    raise
                except GatewayError:
                    # Too late for a 502/504: leaving the response incomplete makes the
                    # server close the client connection, so the truncation is visible.
                    conn.close()
                    return
        except BaseException:
            conn.close()
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
        self.pool.release(conn)

    def start(self, request: Outgoing, client: Client) -> None:
        """The same exchange without a coroutine while it stays simple (docs/performance.md): a
        request with its body in hand, an idle keep-alive connection, and a response that
        is complete when its head arrives and the client can take it at once. Anything
        else (a new connection, a streamed or slow body, a stale connection to retry, a
        slow client) continues on the coroutine path, `relay`, from where it is."""
        conn = self.pool.take() if request.body is not None else None
        transport = conn.transport if conn is not None else None
        if conn is None or transport is None:
            client.relay(partial(self.relay, request))
            return
        # take(): it is usable; written with the turn's other sockets (gateway.proxy.turns)
        conn.send_in_turn(self._whole(request, request.body or b""), self.turn)
        Waiting(self, conn, request, client)

    async def relay(
        self,
        request: Outgoing,
        receive: Receive,
        send: Send,
        conn: UpstreamConnection | None = None,
    ) -> None:
        """The exchange on the coroutine path, answering upstream failures (P4) itself."""
        try:
            await self(request, receive, send, conn)
        except ClientGone:
            return
        except GatewayError as exc:
            await send_answer(send, render(exc, extra=request.response_extra))

    async def aclose(self) -> None:
        self.deadlines.close()
        await self.pool.aclose()

    async def _exchange(
        self, request: Outgoing, receive: Receive, gone: asyncio.Event
    ) -> UpstreamConnection:
        """Send the request and read the response head; retry once on a stale connection."""
        conn = await self.pool.acquire()
        try:
            await self._send_request(conn, request, receive)
            await self._read_head(conn, receive, gone)
        except StaleConnection:
            conn.close()
            if request.body is None or request.method not in IDEMPOTENT:
                raise
            conn = await self.pool.connect()
            try:
                await self._send_request(conn, request, receive)
                await self._read_head(conn, receive, gone)
            except BaseException:
                conn.close()
                raise
        except BaseException:
            conn.close()
            raise
        return conn

    async def _send_request(
        self, conn: UpstreamConnection, request: Outgoing, receive: Receive
    ) -> None:
        if request.body is not None:
            await conn.write(self._whole(request, request.body))
            return
        lines = self._head_lines(request)
        chunked = request.content_length is None
        if chunked:
            lines.append(b"transfer-encoding: chunked\r\n\r\n")
        else:
            lines += (b"content-length: ", request.content_length or b"0", b"\r\n\r\n")
        await conn.write(b"".join(lines))
        await self._send_body(conn, receive, chunked)

    def _head_lines(self, request: Outgoing) -> list[bytes]:
        lines = [request.method.encode("ascii"), b" ", request.target, b" HTTP/1.1\r\n"]
        lines.append(self.host_line)
        for name, value in request.headers:
            lines += (name, b": ", value, _CRLF)
        return lines

    def _whole(self, request: Outgoing, body: bytes) -> bytes:
        """The request with a body known in full, as bytes."""
        lines = self._head_lines(request)
        if body or request.method in ("POST", "PUT", "PATCH"):
            lines += (b"content-length: ", str(len(body)).encode(), _CRLF)
        lines += (_CRLF, body)
        return b"".join(lines)

    async def _send_body(self, conn: UpstreamConnection, receive: Receive, chunked: bool) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            data: bytes = message.get("body", b"")
            if data:
                frame = b"%x\r\n%b\r\n" % (len(data), data) if chunked else data
                async with asyncio.timeout(self.idle_timeout):
                    await conn.write(frame)
            if not message.get("more_body", False):
                break
        if chunked:
            await conn.write(b"0\r\n\r\n")

    async def _read_head(
        self, conn: UpstreamConnection, receive: Receive, gone: asyncio.Event
    ) -> None:
        """Wait for the head; a client that leaves meanwhile aborts the upstream request."""
        loop = conn.loop  # asyncio.get_running_loop() costs a getpid() call on 3.11
        watchers: list[asyncio.Task[None]] = []

        def start_watching() -> None:
            watchers.append(loop.create_task(_watch(receive, conn, gone)))

        timer = loop.call_later(WATCH_AFTER, start_watching)
        try:
            await conn.read_head(self.header_timeout)
        except Exception:
            if gone.is_set():
                raise ClientGone from None
            raise
        finally:
            timer.cancel()
            for task in watchers:
                task.cancel()

    async def _stream(self, conn: UpstreamConnection, send: Send, gone: asyncio.Event) -> None:
        # Until the end *and* every parsed chunk is sent: while a send waits for the client,
        # the rest of the body (and its end) can arrive, so `done` alone is not the end.
        while not conn.done or conn.chunks:
            try:
                chunks = await conn.body(self.idle_timeout)
            except Exception:
                if gone.is_set():
                    raise ClientGone from None
                raise
            for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if gone.is_set():
                raise ClientGone
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _watch(receive: Receive, conn: UpstreamConnection, gone: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            conn.close()
            return


class Waiting:
    """A fast-path request waiting for its response head: woken by the upstream
    connection's events (its `listener`), the header timeout or the client leaving."""

    __slots__ = ("client", "conn", "forward", "request")

    def __init__(
        self, forward: Forwarder, conn: UpstreamConnection, request: Outgoing, client: Client
    ) -> None:
        self.forward = forward
        self.conn = conn
        self.request = request
        self.client = client
        conn.listener = self.on_upstream
        client.on_gone(self.abandon)
        forward.deadlines.add(conn.loop, self)

    def _detach(self) -> None:
        self.conn.listener = None
        self.client.on_gone(None)
        self.forward.deadlines.discard(self)

    def on_upstream(self) -> None:
        conn, request = self.conn, self.request
        if not conn.head_done:
            failure = conn.failure()
            if failure is None:
                return  # part of a head: wait for the rest
            self._detach()
            conn.close()
            if isinstance(failure, StaleConnection) and request.method in IDEMPOTENT:
                self.client.relay(partial(self.forward.relay, request))  # a fresh try
            else:
                self.client.respond(*render(failure, extra=request.response_extra))
            return
        conn.listener = None
        self.forward.deadlines.discard(self)
        if request.method == "HEAD":
            conn.end_without_body()
        if not conn.done or not self.client.writable():
            self.client.on_gone(None)
            self.client.relay(partial(self.forward.relay, request, conn=conn))
            return
        headers = conn.response_headers() + request.response_extra
        body = b"".join(conn.chunks) if len(conn.chunks) != 1 else conn.chunks[0]
        conn.chunks = []
        # A whole response completes the exchange, which drops the on_gone callback.
        self.client.respond(conn.status, headers, body)
        self.forward.pool.release(conn)

    def expire(self) -> None:
        self._detach()
        self.conn.close()
        timeout = GatewayTimeout(NO_ANSWER)
        self.client.respond(*render(timeout, extra=self.request.response_extra))

    def abandon(self) -> None:
        """The client left: the upstream sees it too (the connection is aborted)."""
        self._detach()
        self.conn.close()
