"""A lean HTTP/1.1 client for the one upstream: asyncio streams + httptools.

Why not httpx: its connection pool polls every pooled socket on every request and
detects the async library per call (PERF.md: ~25x slower than this). The gateway talks
to a single origin, so a LIFO list of idle keep-alive connections is the whole pool.
"""

from __future__ import annotations

import asyncio

import httptools

from gateway.proxy.errors import BadGateway, GatewayTimeout, StaleConnection

Header = tuple[bytes, bytes]
READ_SIZE = 64 * 1024
# uvicorn closes idle keep-alive connections after 5 s; reusing one at that moment races
# with its FIN, so idle connections are retired a little earlier.
DEFAULT_IDLE_LIFETIME = 4.0


class UpstreamConnection:
    """One keep-alive connection; also the httptools callback target."""

    __slots__ = (
        "chunks",
        "delimited",
        "done",
        "head_done",
        "headers",
        "idle_since",
        "keep_alive",
        "parser",
        "reader",
        "received",
        "reused",
        "status",
        "writer",
    )

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = httptools.HttpResponseParser(self)
        self.reused = False
        self.idle_since = 0.0
        self.reset()

    def reset(self) -> None:
        self.status = 0
        self.headers: list[Header] = []
        self.chunks: list[bytes] = []
        self.head_done = False
        self.done = False
        self.received = False
        self.keep_alive = False
        self.delimited = False

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        self.delimited = any(
            name in (b"content-length", b"transfer-encoding") for name, _ in self.headers
        )
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.done = True

    # I/O
    async def write(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            await self.writer.drain()
        except OSError as exc:
            raise self._closed(f"upstream connection failed while sending: {exc}") from None

    async def read_head(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                while True:
                    while not self.head_done:
                        await self._feed()
                    if not 100 <= self.status < 200 or self.status == 101:
                        return
                    self.head_done = False  # an interim response: wait for the final one
                    self.headers = []
        except TimeoutError:
            raise GatewayTimeout("the upstream did not answer in time") from None

    async def body(self, idle_timeout: float) -> list[bytes]:
        """The body chunks parsed so far, waiting up to idle_timeout for at least one."""
        if not self.chunks and not self.done:
            try:
                async with asyncio.timeout(idle_timeout):
                    while not self.chunks and not self.done:
                        await self._feed()
            except TimeoutError:
                raise GatewayTimeout("the upstream stopped sending the response") from None
        chunks = self.chunks
        self.chunks = []
        return chunks

    def end_without_body(self) -> None:
        """A HEAD response: the parser cannot know there is no body, so don't reuse."""
        self.done = True
        self.keep_alive = False

    async def _feed(self) -> None:
        try:
            data = await self.reader.read(READ_SIZE)
        except OSError as exc:
            raise self._closed(f"upstream connection failed: {exc}") from None
        if not data:
            if self.head_done and not self.delimited:
                self.done = True  # a body delimited by the end of the connection
                self.keep_alive = False
                return
            raise self._closed("the upstream closed the connection")
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            raise BadGateway("the upstream sent a malformed response") from None

    def _closed(self, message: str) -> BadGateway:
        if self.reused and not self.received:
            return StaleConnection(message)
        return BadGateway(message)

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.transport.abort()


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
        now = asyncio.get_running_loop().time()
        while self._idle:
            conn = self._idle.pop()
            if conn.usable() and now - conn.idle_since < self.idle_lifetime:
                conn.reused = True
                return conn
            conn.close()
        return await self.connect()

    async def connect(self) -> UpstreamConnection:
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, limit=READ_SIZE
                )
        except TimeoutError:
            raise GatewayTimeout("the upstream did not accept a connection in time") from None
        except OSError:
            raise BadGateway("the upstream is not reachable") from None
        return UpstreamConnection(reader, writer)

    def release(self, conn: UpstreamConnection) -> None:
        """Back into the pool when the exchange ended cleanly; closed otherwise."""
        if (
            conn.done
            and conn.keep_alive
            and not conn.chunks
            and conn.usable()
            and len(self._idle) < self.max_idle
        ):
            conn.reset()
            conn.idle_since = asyncio.get_running_loop().time()
            self._idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
