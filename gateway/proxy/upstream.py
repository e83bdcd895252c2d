"""A lean HTTP/1.1 client for the one upstream: asyncio streams + httptools.

Why not httpx: its connection pool polls every pooled socket on every request and
detects the async library per call (docs/performance.md: ~25x slower than this). The gateway talks
to a single origin, so a LIFO list of idle keep-alive connections is the whole pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httptools

from gateway.proxy.errors import BadGateway, GatewayTimeout, StaleConnection
from gateway.proxy.headers import FOLD, RESPONSE_DROP, connection_tokens
from gateway.proxy.turns import TurnWrites

Header = tuple[bytes, bytes]
READ_SIZE = 64 * 1024
# uvicorn closes idle keep-alive connections after 5 s; reusing one at that moment races
# with its FIN, so idle connections are retired a little earlier.
DEFAULT_IDLE_LIFETIME = 4.0
NO_ANSWER = "the upstream did not answer in time"


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection: an asyncio Protocol feeding httptools directly (no
    StreamReader/StreamWriter layer, no per-request timeout context), and also the
    httptools callback target.

    Memory stays bounded: reading pauses while more than READ_SIZE bytes of parsed body
    wait for the client, and writes wait for the transport's buffer to drain."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.reused = False
        self.idle_since = 0.0
        self.closed = False
        self.eof = False
        self.error: BadGateway | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.drained: asyncio.Future[None] | None = None
        self.write_paused = False
        self.read_paused = False
        # Called (besides waking a coroutine) on every data, end or error event while
        # set: the protocol fast path waits for a response this way (forward.Waiting).
        self.listener: Callable[[], None] | None = None
        self.outgoing = b""  # a request to write when the turn ends (send_in_turn)
        self.reset()

    def reset(self) -> None:
        self.status = 0
        # The response's end-to-end headers: hop-by-hop ones, Server and Date (P1) are
        # left out as they are parsed; `response_headers()` drops those named in
        # Connection, once the whole head is known.
        self.headers: list[Header] = []
        self.named: frozenset[bytes] = _NONE
        self.chunks: list[bytes] = []
        self.head_done = False
        self.done = False
        self.received = False
        self.keep_alive = False
        self.delimited = False
        self.buffered = 0
        self.listener = None
        if self.read_paused and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.error = BadGateway("the upstream sent a malformed response")
        if self.buffered > READ_SIZE and not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        if self.head_done and not self.delimited and not self.done:
            self.done = True  # a body delimited by the end of the connection
            self.keep_alive = False
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        drained, self.drained = self.drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.translate(FOLD)
        if key not in RESPONSE_DROP:
            if key == b"content-length":
                self.delimited = True
            self.headers.append((name.lower(), value))
        elif key == b"transfer-encoding":
            self.delimited = True
        elif (key == b"connection" or key == b"proxy-connection") and value.lower() not in _PLAIN:
            # Names that are dropped anyway need no second look ("keep-alive").
            self.named |= connection_tokens(value) - RESPONSE_DROP

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # An interim response: wait for the final one.
            self.headers, self.named, self.delimited = [], _NONE, False
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        self.head_done = True

    def response_headers(self) -> list[Header]:
        """The response headers to pass on (PROTOCOL P1): end-to-end ones only."""
        named = self.named
        if not named:
            return self.headers
        return [(name, value) for name, value in self.headers if name.translate(FOLD) not in named]

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)

    def on_message_complete(self) -> None:
        if self.head_done:
            self.done = True

    # I/O
    async def write(self, data: bytes) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise self._closed("upstream connection failed while sending")
        self.transport.write(data)
        if self.write_paused:
            drained = self.drained = self.loop.create_future()
            await drained
            if self.closed:
                raise self._closed("upstream connection failed while sending")

    def send_in_turn(self, data: bytes, turn: TurnWrites) -> None:
        """Write `data` (a whole request) when this loop turn ends, with the other
        sockets written in it (gateway.proxy.turns)."""
        if self.outgoing:  # one not flushed yet (already due this turn): it goes first
            self.flush_turn()
        else:
            turn.add(self.loop, self)
        self.outgoing = data

    def flush_turn(self) -> None:
        data, self.outgoing = self.outgoing, b""
        transport = self.transport
        if data and not self.closed and transport is not None and not transport.is_closing():
            transport.write(data)

    async def read_head(self, seconds: float) -> None:
        while not self.head_done:
            await self._wait(seconds, NO_ANSWER)

    async def body(self, idle_timeout: float) -> list[bytes]:
        """The body chunks parsed so far, waiting up to idle_timeout for at least one."""
        while not self.chunks and not self.done:
            await self._wait(idle_timeout, "the upstream stopped sending the response")
        chunks = self.chunks
        self.chunks = []
        self.buffered = 0
        if self.read_paused and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()
        return chunks

    def end_without_body(self) -> None:
        """A HEAD response: the parser cannot know there is no body, so don't reuse."""
        self.done = True
        self.keep_alive = False

    async def _wait(self, seconds: float, late: str) -> None:
        """Until the next data, end or error; GatewayTimeout after `seconds`."""
        if self.error is not None:
            raise self.error
        if self.closed or self.eof:
            raise self._closed("the upstream closed the connection")
        waiter = self.waiter = self.loop.create_future()
        timer = self.loop.call_later(seconds, _expire, waiter)
        try:
            await waiter
        except TimeoutError:
            raise GatewayTimeout(late) from None
        finally:
            timer.cancel()
            self.waiter = None
        if self.error is not None:
            raise self.error

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.listener is not None:
            self.listener()

    def failure(self) -> BadGateway | None:
        """Why no response can come any more (what `_wait` would raise), or None."""
        if self.error is not None:
            return self.error
        if self.closed or self.eof:
            return self._closed("the upstream closed the connection")
        return None

    def _closed(self, message: str) -> BadGateway:
        if self.reused and not self.received:
            return StaleConnection(message)
        return BadGateway(message)

    def usable(self) -> bool:
        return (
            not self.closed
            and not self.eof
            and self.transport is not None
            and (not self.transport.is_closing())
        )

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


_NONE: frozenset[bytes] = frozenset()
# Connection values that name no end-to-end header.
_PLAIN = frozenset({b"keep-alive", b"close"})


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class UpstreamPool:
    """Keep-alive connections to the single upstream origin, reused last-in first-out."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float,
        max_idle: int = 256,
        idle_lifetime: float = DEFAULT_IDLE_LIFETIME,
    ) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.idle_lifetime = idle_lifetime
        self._idle: list[UpstreamConnection] = []

    async def acquire(self) -> UpstreamConnection:
        conn = self.take()
        return conn if conn is not None else await self.connect()

    def take(self) -> UpstreamConnection | None:
        """An idle keep-alive connection that is still usable, or None."""
        # conn.loop, not asyncio.get_running_loop(): on Python 3.11 that calls getpid(),
        # a system call, every time (three per request before this).
        while self._idle:
            conn = self._idle.pop()
            if conn.usable() and conn.loop.time() - conn.idle_since < self.idle_lifetime:
                conn.reused = True
                return conn
            conn.close()
        return None

    async def connect(self) -> UpstreamConnection:
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await asyncio.get_running_loop().create_connection(
                    UpstreamConnection, self.host, self.port
                )
        except TimeoutError:
            raise GatewayTimeout("the upstream did not accept a connection in time") from None
        except OSError:
            raise BadGateway("the upstream is not reachable") from None
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Back into the pool when the exchange ended cleanly; closed otherwise."""
        transport = conn.transport
        if (
            conn.done
            and conn.keep_alive
            and not conn.chunks
            and not conn.closed
            and not conn.eof
            and transport is not None
            and not transport.is_closing()  # conn.usable(), inline
            and len(self._idle) < self.max_idle
        ):
            conn.reset()
            conn.idle_since = conn.loop.time()
            self._idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
