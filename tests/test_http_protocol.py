"""The corked uvicorn protocol: one write per response, without delaying streams (P3)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.http_protocol import (
    CORK_LIMIT,
    FAST_BODY_LIMIT,
    MAX_HEAD_BYTES,
    CorkedHttpToolsProtocol,
    CorkedTransport,
    fast_proxy_protocol,
    small_body,
)
from gateway.proxy.app import Found, scan
from gateway.proxy.forward import Client
from gateway.proxy.turns import TurnWrites
from gateway.tls import GatewayServer

LOOPBACK = "127.0.0.1"
SMALL = b'{"memories": []}'
MB = 1024 * 1024


class RecordingTransport(asyncio.Transport):
    """Stands in for the socket: one `write` call here is one send syscall in uvloop."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": (LOOPBACK, 50000), "sockname": (LOOPBACK, 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def small(scope: Scope, receive: Receive, send: Send) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(SMALL))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": SMALL})


async def two_events(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
    await asyncio.sleep(0.01)
    await send({"type": "http.response.body", "body": b"data: 2\n\n", "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def exchange(protocol_class: type[HttpToolsProtocol], app: Any) -> list[bytes]:
    config = Config(app, lifespan="off", log_config=None, access_log=False, date_header=False)
    transport = RecordingTransport()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    protocol.connection_made(transport)
    protocol.data_received(b"GET /api/memories HTTP/1.1\r\nhost: x\r\n\r\n")
    for _ in range(100):
        await asyncio.sleep(0.005)
        if protocol.cycle.response_complete:
            break
    await asyncio.sleep(0.005)
    return transport.writes


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("protocol_class", "writes"), [(HttpToolsProtocol, 2), (CorkedHttpToolsProtocol, 1)]
)
async def test_small_response_leaves_in_one_write(
    protocol_class: type[HttpToolsProtocol], writes: int
) -> None:
    sent = await exchange(protocol_class, small)
    assert len(sent) == writes
    response = b"".join(sent)
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.endswith(b"\r\n\r\n" + SMALL)


@pytest.mark.anyio
async def test_p3_each_streamed_chunk_leaves_in_the_turn_it_was_sent() -> None:
    sent = await exchange(CorkedHttpToolsProtocol, two_events)
    assert len(sent) == 2
    assert sent[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert sent[0].endswith(b"\r\n\r\n9\r\ndata: 1\n\n\r\n")  # head + first event together
    assert sent[1] == b"9\r\ndata: 2\n\n\r\n0\r\n\r\n"


@pytest.mark.anyio
async def test_close_and_abort_semantics() -> None:
    inner = RecordingTransport()
    corked = CorkedTransport(inner, asyncio.get_running_loop())
    corked.write(b"head")
    corked.write(b"body")
    assert inner.writes == []
    assert corked.get_write_buffer_size() == 8
    corked.close()  # what was written before close still goes out
    assert inner.writes == [b"headbody"]
    assert inner.closed
    await asyncio.sleep(0)
    assert inner.writes == [b"headbody"]  # the scheduled flush finds nothing left

    inner = RecordingTransport()
    corked = CorkedTransport(inner, asyncio.get_running_loop())
    corked.write(b"dropped")
    corked.abort()
    await asyncio.sleep(0)
    assert inner.writes == []
    assert inner.closed


@pytest.mark.anyio
async def test_a_servers_connections_flush_together_when_the_turn_ends() -> None:
    """gateway.proxy.turns: one callback for every corked connection of a server, each
    connection's writes of the turn still in one write of its own."""
    loop = asyncio.get_running_loop()
    turn = TurnWrites()
    inners = [RecordingTransport() for _ in range(3)]
    corked = [CorkedTransport(inner, loop, turn) for inner in inners]
    for number, transport in enumerate(corked):
        transport.write(b"head%d" % number)
        transport.write(b"body%d" % number)
    assert len(turn) == 3  # each connection once, however many writes
    assert all(inner.writes == [] for inner in inners)
    await asyncio.sleep(0)
    assert [inner.writes for inner in inners] == [[b"head%dbody%d" % (n, n)] for n in range(3)]
    corked[0].write(b"next")  # a later turn: scheduled again
    assert len(turn) == 1
    await asyncio.sleep(0)
    assert inners[0].writes == [b"head0body0", b"next"]


@pytest.mark.anyio
async def test_writes_past_the_cork_limit_go_through_at_once() -> None:
    """So the real transport's pause_writing still governs a fast sender."""
    inner = RecordingTransport()
    corked = CorkedTransport(inner, asyncio.get_running_loop())
    corked.write(b"x" * (CORK_LIMIT - 1))
    assert inner.writes == []
    corked.write(b"y")
    assert [len(w) for w in inner.writes] == [CORK_LIMIT]


# Real sockets, under uvloop as in production.


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    route = ROUTES[scope["path"]]
    await route(scope, receive, send)


async def sse(scope: Scope, receive: Receive, send: Send) -> None:
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await asyncio.sleep(0.2)  # the head must not wait for the first event
    for _ in range(10):
        event = b"data: %f\n\n" % time.time()
        await send({"type": "http.response.body", "body": event, "more_body": True})
        await asyncio.sleep(0.03)
    await send({"type": "http.response.body", "body": b""})


BIG_CHUNK = 256 * 1024
buffered_peak: list[int] = [0]


async def big(scope: Scope, receive: Receive, send: Send) -> None:
    """64 MB sent as fast as the protocol lets it; records the largest write backlog."""
    headers = [(b"content-length", b"%d" % (64 * MB))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    transport = scope["extensions"]["transport"]()
    chunk = b"b" * BIG_CHUNK
    for _ in range(64 * MB // BIG_CHUNK):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        buffered_peak[0] = max(buffered_peak[0], transport.get_write_buffer_size())
    await send({"type": "http.response.body", "body": b""})


async def fails_midway(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    raise RuntimeError("the upstream went away")


ROUTES: dict[str, Callable[[Scope, Receive, Send], Any]] = {
    "/small": small,
    "/sse": sse,
    "/big": big,
    "/fails": fails_midway,
}


class TransportExposingProtocol(CorkedHttpToolsProtocol):
    """Lets the /big route see its connection's transport (test only)."""

    def on_headers_complete(self) -> None:
        transport = self.transport
        self.scope["extensions"] = {"transport": lambda: transport}  # type: ignore[dict-item]
        super().on_headers_complete()


@contextmanager
def serving(protocol: type[HttpToolsProtocol] = CorkedHttpToolsProtocol) -> Iterator[int]:
    server = GatewayServer(
        app, LOOPBACK, 0, None, loop="uvloop", http=protocol,
        lifespan="off", log_config=None, access_log=False,
    )  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        assert server.port is not None
        yield server.port
    finally:
        server.stop()
        thread.join(timeout=10)


def request(port: int, path: str, extra: bytes = b"") -> socket.socket:
    sock = socket.create_connection((LOOPBACK, port), timeout=10)
    sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
    return sock


def read_until(sock: socket.socket, marker: bytes, buffer: bytes = b"") -> bytes:
    while marker not in buffer:
        data = sock.recv(65536)
        assert data, f"connection closed before {marker!r}"
        buffer += data
    return buffer


def read_to_eof(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


def test_keep_alive_responses_are_complete_and_in_order() -> None:
    with serving() as port, socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        one = b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n"
        sock.sendall(one * 3)  # pipelined
        data = b""
        while data.count(SMALL) < 3:
            chunk = sock.recv(65536)
            assert chunk, "connection closed early"
            data += chunk
        assert data.count(b"HTTP/1.1 200 OK\r\n") == 3
        assert data.endswith(SMALL)


def test_p3_sse_head_and_events_arrive_promptly_one_by_one() -> None:
    with serving() as port, request(port, "/sse") as sock:
        started = time.monotonic()
        buffer = read_until(sock, b"\r\n\r\n")
        assert time.monotonic() - started < 0.15, "the head waited for the first event"
        assert buffer.startswith(b"HTTP/1.1 200 OK")
        delays, arrivals = [], 0
        buffer = buffer.split(b"\r\n\r\n", 1)[1]
        while arrivals < 10:
            buffer = read_until(sock, b"\n\n", buffer)
            now = time.time()
            event, buffer = buffer.split(b"\n\n", 1)
            delays.append(now - float(event.split(b"data: ", 1)[1]))
            arrivals += 1
        assert max(delays) < 0.02, delays  # each event 30 ms apart, none held back


def test_p3_large_body_streams_with_bounded_buffering() -> None:
    buffered_peak[0] = 0
    with serving(TransportExposingProtocol) as port, request(port, "/big") as sock:
        head = read_until(sock, b"\r\n\r\n")
        received = len(head.split(b"\r\n\r\n", 1)[1])
        while received < 64 * MB:
            if received < 4 * MB:
                time.sleep(0.001)  # a slow reader at first, so the sender must wait
            data = sock.recv(1024 * 1024)
            assert data
            received += len(data)
        assert received == 64 * MB
    assert 0 < buffered_peak[0] < 2 * MB, buffered_peak[0]


def test_error_after_response_started_still_delivers_what_was_sent() -> None:
    with serving() as port, request(port, "/fails") as sock:
        data = read_to_eof(sock)
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert b"7\r\npartial\r\n" in data
    assert not data.endswith(b"0\r\n\r\n")  # truncated: the client can tell


def test_connection_close_request_gets_its_body_before_eof() -> None:
    with serving() as port, request(port, "/small", b"Connection: close\r\n") as sock:
        data = read_to_eof(sock)
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert b"connection: close\r\n" in data
    assert data.endswith(SMALL)


def test_malformed_request_gets_a_400_body_before_eof() -> None:
    with serving() as port, socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        sock.sendall(b"NOT HTTP\x00\r\n\r\n")
        data = read_to_eof(sock)
    assert data.startswith(b"HTTP/1.1 400 Bad Request")
    assert data.endswith(b"Invalid HTTP request received.")


def test_request_head_over_the_limit_gets_431_and_the_connection_closes() -> None:
    with serving() as port, socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        sock.sendall(b"GET /small HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(64):  # up to 4 MiB, far past the limit; the server hangs up
                sock.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = read_to_eof(sock)
    assert data.startswith(b"HTTP/1.1 431 Request Header Fields Too Large")
    assert data.endswith(b'exceed 65536 bytes"}')


def test_endless_request_line_is_refused_too() -> None:
    with serving() as port, socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        sock.sendall(b"GET /small?")
        try:
            for _ in range(8):
                sock.sendall(b"q" * 16384)
                time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = read_to_eof(sock)
    assert data.startswith(b"HTTP/1.1 431")


def test_heads_under_the_limit_and_large_bodies_are_served() -> None:
    header = b"X-Fine: " + b"b" * 32_000 + b"\r\n"
    with serving() as port, request(port, "/small", header) as sock:
        assert read_until(sock, SMALL).startswith(b"HTTP/1.1 200 OK")
    body = b"c" * (MAX_HEAD_BYTES * 4)
    with serving() as port, socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        head = b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
        sock.sendall(head + body + b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while data.count(SMALL) < 2:
            chunk = sock.recv(65536)
            assert chunk, "connection closed early"
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 2


# The proxy fast path (fast_proxy_protocol): bodyless proxied requests served inside the
# protocol, everything else on uvicorn's ASGI path.


class TLSRecordingTransport(RecordingTransport):
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sslcontext":
            return object()
        return super().get_extra_info(name, default)


class FakeProxy:
    """Records each fast-path request; `answer` decides what to do with its client.
    A request with a small body: `admit` decides at the head (True: wait for the body,
    else it answered), then `answer` once the body is in hand (`bodies`)."""

    def __init__(
        self, answer: Callable[[Client], None], admit: Callable[[Client], bool] = lambda c: True
    ) -> None:
        self.answer = answer
        self.admit = admit
        self.requests: list[tuple[str, bytes, bytes, str, bool]] = []
        self.clients: list[Client] = []
        self.bodies: list[bytes] = []

    def begin(
        self,
        method: str,
        raw_path: bytes,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        peer: str,
        found: Found,
        client: Client,
    ) -> object | None:
        self.requests.append((method, raw_path, query, peer, found.authorization is not None))
        self.clients.append(client)
        return len(self.requests) if self.admit(client) else None

    def finish(self, admitted: object, body: bytes, client: Client) -> None:
        assert admitted == len(self.requests)
        self.bodies.append(body)
        self.answer(client)

    def start(
        self,
        method: str,
        raw_path: bytes,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        peer: str,
        found: Found,
        client: Client,
    ) -> None:
        self.requests.append((method, raw_path, query, peer, found.authorization is not None))
        self.clients.append(client)
        self.answer(client)


def small_reply(client: Client) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(SMALL))]
    client.respond(200, headers, SMALL)


asgi_calls: list[str] = []


async def asgi_small(scope: Scope, receive: Receive, send: Send) -> None:
    asgi_calls.append(f"{scope['method']} {scope['path']}")
    while (await receive()).get("more_body"):
        pass
    await small(scope, receive, send)


async def fast_connection(
    proxy: FakeProxy,
    data: bytes,
    transport: RecordingTransport | None = None,
    https_headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[HttpToolsProtocol, RecordingTransport]:
    asgi_calls.clear()
    protocol_class = fast_proxy_protocol(
        proxy, lambda path: path != "/healthz", https_headers=https_headers or []
    )
    config = Config(
        asgi_small, lifespan="off", log_config=None, access_log=False, date_header=False
    )
    transport = transport or RecordingTransport()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    protocol.connection_made(transport)
    protocol.data_received(data)
    for _ in range(5):
        await asyncio.sleep(0.005)
    return protocol, transport


GET = b"GET /api/memories?limit=2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n"


@pytest.mark.anyio
async def test_bodyless_proxied_request_is_answered_in_the_protocol_in_one_write() -> None:
    proxy = FakeProxy(small_reply)
    protocol, transport = await fast_connection(proxy, GET)
    assert proxy.requests == [("GET", b"/api/memories", b"limit=2", LOOPBACK, True)]
    assert asgi_calls == []
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b"\r\n\r\n" + SMALL)
    assert b"connection: close" not in transport.writes[0]
    assert not transport.closed  # keep-alive
    assert protocol.cycle.response_complete


@pytest.mark.anyio
@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",  # a route the proxy does not serve
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
        b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (FAST_BODY_LIMIT + 1)
        + b"x" * (FAST_BODY_LIMIT + 1),  # a body over the limit streams
        b"POST /mcp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        b"GET /api/memories HTTP/1.0\r\nHost: x\r\n\r\n",
        b"GET /api/memories HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
    ],
)
async def test_other_requests_take_the_asgi_path(request_bytes: bytes) -> None:
    proxy = FakeProxy(small_reply)
    _, transport = await fast_connection(proxy, request_bytes)
    assert proxy.requests == []
    assert len(asgi_calls) == 1
    assert b"".join(transport.writes).endswith(SMALL)


@pytest.mark.anyio
async def test_unframed_response_is_chunked_and_head_gets_no_body() -> None:
    proxy = FakeProxy(lambda client: client.respond(200, [], b"abc"))
    _, transport = await fast_connection(proxy, GET)
    assert b"transfer-encoding: chunked\r\n" in transport.writes[0]
    assert transport.writes[0].endswith(b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n")

    head = GET.replace(b"GET", b"HEAD")
    framed = [(b"content-length", b"3")]
    _, transport = await fast_connection(
        FakeProxy(lambda client: client.respond(200, framed, b"abc")), head
    )
    assert transport.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n"]


@pytest.mark.anyio
async def test_pipelined_request_waits_for_the_fast_response_before_it() -> None:
    proxy = FakeProxy(lambda client: None)  # the upstream has not answered yet
    second = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    _, transport = await fast_connection(proxy, GET + second)
    assert transport.writes == []
    assert asgi_calls == []  # queued behind the first request
    proxy.clients[0].respond(200, [(b"content-length", b"5")], b"first")
    for _ in range(5):
        await asyncio.sleep(0.005)
    data = b"".join(transport.writes)
    assert data.index(b"first") < data.index(SMALL)
    assert asgi_calls == ["GET /healthz"]


@pytest.mark.anyio
async def test_client_disconnect_reaches_the_waiting_exchange() -> None:
    gone: list[bool] = []
    proxy = FakeProxy(lambda client: client.on_gone(lambda: gone.append(True)))
    protocol, _ = await fast_connection(proxy, GET)
    assert gone == []
    protocol.connection_lost(None)
    assert gone == [True]


@pytest.mark.anyio
async def test_a_whole_response_drops_the_gone_callback() -> None:
    """Once answered, a later disconnect is no one's business: the waiter that set the
    callback (forward.Waiting) has handed its upstream connection back to the pool."""
    gone: list[bool] = []

    def wait_then_answer(client: Client) -> None:
        client.on_gone(lambda: gone.append(True))
        small_reply(client)

    protocol, _ = await fast_connection(FakeProxy(wait_then_answer), GET)
    protocol.connection_lost(None)
    assert gone == []


@pytest.mark.anyio
async def test_relayed_exchange_streams_chunks_through_send() -> None:
    async def run(receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"data: 2\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    proxy = FakeProxy(lambda client: client.relay(run))
    protocol, transport = await fast_connection(proxy, GET)
    assert len(transport.writes) == 2  # the first event did not wait for the second
    assert transport.writes[0].endswith(b"\r\n\r\n9\r\ndata: 1\n\n\r\n")
    assert transport.writes[1] == b"9\r\ndata: 2\n\n\r\n0\r\n\r\n"
    assert protocol.cycle.response_complete


@pytest.mark.anyio
async def test_relayed_exchange_that_ends_early_closes_the_connection() -> None:
    async def run(receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})

    _, transport = await fast_connection(FakeProxy(lambda client: client.relay(run)), GET)
    assert transport.closed
    assert not b"".join(transport.writes).endswith(b"0\r\n\r\n")


@pytest.mark.anyio
async def test_header_injection_from_upstream_becomes_a_500() -> None:
    proxy = FakeProxy(lambda client: client.respond(200, [(b"x-a", b"1\r\nx-b: 2")], b""))
    _, transport = await fast_connection(proxy, GET)
    data = b"".join(transport.writes)
    assert data.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"x-b" not in data
    assert transport.closed


@pytest.mark.anyio
async def test_hsts_is_added_on_tls_connections_only() -> None:
    hsts = [(b"strict-transport-security", b"max-age=31536000")]
    _, plain = await fast_connection(FakeProxy(small_reply), GET, https_headers=hsts)
    _, tls = await fast_connection(
        FakeProxy(small_reply), GET, TLSRecordingTransport(), https_headers=hsts
    )
    assert b"strict-transport-security" not in plain.writes[0]
    assert b"strict-transport-security: max-age=31536000\r\n" in tls.writes[0]


# Small bodies with a Content-Length: admitted at the head, forwarded with the whole body.

POST = (
    b"POST /mcp HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n"
    b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
)


@pytest.mark.anyio
async def test_small_body_is_read_in_the_protocol_and_answered_in_one_write() -> None:
    proxy = FakeProxy(small_reply)
    protocol, transport = await fast_connection(proxy, POST)
    assert proxy.requests == [("POST", b"/mcp", b"", LOOPBACK, True)]
    assert proxy.bodies == [b"{}"]
    assert asgi_calls == []
    assert len(transport.writes) == 1
    assert transport.writes[0].endswith(b"\r\n\r\n" + SMALL)
    assert not transport.closed
    assert protocol.cycle.response_complete


@pytest.mark.anyio
async def test_body_in_several_reads_is_admitted_at_the_head_and_finished_whole() -> None:
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}' * 2000  # ~100 KB
    head = b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    proxy = FakeProxy(small_reply)
    protocol, transport = await fast_connection(proxy, head + body[:10])
    assert len(proxy.requests) == 1  # admitted before the body arrived
    assert proxy.bodies == []
    assert transport.writes == []
    for start in range(10, len(body), 16384):
        protocol.data_received(body[start : start + 16384])
    assert proxy.bodies == [body]
    await asyncio.sleep(0.005)  # the cork flushes in the next loop turn
    assert b"".join(transport.writes).endswith(SMALL)
    assert asgi_calls == []


@pytest.mark.anyio
async def test_refused_at_the_head_the_body_is_skipped_and_the_connection_kept() -> None:
    def deny(client: Client) -> bool:
        client.respond(401, [(b"content-length", b"6")], b"denied")
        return False

    proxy = FakeProxy(small_reply, admit=deny)
    head, body = POST.split(b"\r\n\r\n")
    protocol, transport = await fast_connection(proxy, head + b"\r\n\r\n")
    assert transport.writes[0].startswith(b"HTTP/1.1 401 ")  # before the body was sent
    protocol.data_received(body + GET)  # the body, then the next request on the connection
    for _ in range(5):
        await asyncio.sleep(0.005)
    assert proxy.bodies == []
    assert len(proxy.requests) == 2
    assert b"".join(transport.writes).endswith(SMALL)
    assert not transport.closed


@pytest.mark.anyio
async def test_client_leaving_mid_body_forwards_nothing() -> None:
    proxy = FakeProxy(small_reply)
    protocol, transport = await fast_connection(proxy, POST[:-1])
    protocol.connection_lost(None)
    assert proxy.bodies == []
    assert transport.writes == []


@pytest.mark.anyio
async def test_pipelined_small_bodies_are_answered_in_order() -> None:
    proxy = FakeProxy(lambda client: None)  # the upstream has not answered yet
    _, transport = await fast_connection(proxy, POST + POST.replace(b"{}", b"[]"))
    assert proxy.bodies == [b"{}"]
    assert asgi_calls == []  # the second waits (uvicorn's pipeline) behind the first
    proxy.clients[0].respond(200, [(b"content-length", b"5")], b"first")
    for _ in range(5):
        await asyncio.sleep(0.005)
    data = b"".join(transport.writes)
    assert data.index(b"first") < data.index(SMALL)
    assert asgi_calls == ["POST /mcp"]


def test_small_body_rule() -> None:
    def rule(*headers: tuple[bytes, bytes]) -> bool:
        return small_body(scan(list(headers)))

    assert rule((b"content-length", b"2"))
    assert rule((b"content-length", b"%d" % FAST_BODY_LIMIT))
    assert not rule((b"content-length", b"%d" % (FAST_BODY_LIMIT + 1)))
    assert not rule((b"content-length", b"99999999999999999999"))
    assert not rule((b"transfer-encoding", b"chunked"))
    assert not rule((b"content-length", b"2"), (b"transfer-encoding", b"chunked"))


# --- The keep-alive timer: armed once, looks at the connection when due -----------------


async def slow_small(scope: Scope, receive: Receive, send: Send) -> None:
    await asyncio.sleep(0.4)
    await small(scope, receive, send)


async def keep_alive_connection(
    app: Any, keep_alive: float = 0.2
) -> tuple[HttpToolsProtocol, RecordingTransport]:
    config = Config(app, lifespan="off", log_config=None, access_log=False)
    config.timeout_keep_alive = keep_alive  # type: ignore[assignment]  # typed int; a float works
    transport = RecordingTransport()
    protocol = CorkedHttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
    protocol.connection_made(transport)
    return protocol, transport


ONE = b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.anyio
async def test_keep_alive_counts_from_the_last_response_not_the_first() -> None:
    protocol, transport = await keep_alive_connection(small)
    protocol.data_received(ONE)
    await asyncio.sleep(0.12)
    protocol.data_received(ONE)  # the timer armed after the first answer is not reset
    await asyncio.sleep(0.15)  # 0.27 s after the first answer, 0.15 s after the second
    assert not transport.closed
    assert b"".join(transport.writes).count(b"HTTP/1.1 200") == 2
    await asyncio.sleep(0.15)
    assert transport.closed
    protocol.connection_lost(None)


@pytest.mark.anyio
async def test_keep_alive_never_closes_a_connection_with_a_response_in_progress() -> None:
    protocol, transport = await keep_alive_connection(small)
    protocol.data_received(ONE)
    await asyncio.sleep(0.05)
    protocol.app = slow_small  # the next request takes 0.4 s
    protocol.data_received(ONE)
    await asyncio.sleep(0.3)  # the first answer's timer came due meanwhile
    assert not transport.closed
    await asyncio.sleep(0.2)
    assert b"".join(transport.writes).count(b"HTTP/1.1 200") == 2
    assert not transport.closed  # 0.1 s after the slow answer
    await asyncio.sleep(0.2)
    assert transport.closed
    protocol.connection_lost(None)


@pytest.mark.anyio
async def test_stray_line_breaks_do_not_keep_a_connection_open() -> None:
    protocol, transport = await keep_alive_connection(small)
    protocol.data_received(ONE)
    for _ in range(8):  # 0.4 s of CRLFs, twice the keep-alive timeout
        await asyncio.sleep(0.05)
        if transport.closed:
            break
        protocol.data_received(b"\r\n")
    assert transport.closed
    protocol.connection_lost(None)


@pytest.mark.anyio
async def test_a_lost_connection_leaves_no_keep_alive_timer() -> None:
    protocol, _transport = await keep_alive_connection(small)
    protocol.data_received(ONE)
    await asyncio.sleep(0.02)
    assert protocol.timeout_keep_alive_task is not None
    protocol.connection_lost(ConnectionResetError())
    assert protocol.timeout_keep_alive_task is None


@pytest.mark.parametrize(
    "target",
    [b"/", b"/api/memories", b"/api/memories?limit=2&q=a%20b", b"/a?", b"/a?b?c", b"//x/y",
     b"/%2e%2e/x", b"/mcp/", b"/a#frag", b"http://host:1/path?q=1", b"*"],
)  # fmt: skip
def test_the_fast_target_split_agrees_with_httptools(target: bytes) -> None:
    import httptools

    from gateway.http_protocol import _target

    try:
        parsed = httptools.parse_url(target)
    except httptools.HttpParserInvalidURLError:
        assert _target(target) is None
        return
    assert _target(target) == (parsed.path, parsed.query or b"")
