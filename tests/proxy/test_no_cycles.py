"""Per-request objects of the fast path are freed by reference counting.

A reference cycle per request (an object holding itself, a bound method of an object
stored on it) leaves everything the request reached to the cycle collector: memory
piles up between collections and the collector's passes cost CPU on every workload.
This serves the real ProxyApp and protocol fast path in this process (uvicorn in a
thread, the test upstream in its own process) with the collector told to keep what it
finds, and looks for any request-scoped object among it.
"""

from __future__ import annotations

import gc
import socket
from collections.abc import Iterator
from typing import Any

import httptools
import pytest

from gateway.http_protocol import fast_proxy_protocol
from gateway.settings import Settings
from tests.proxy.conftest import Server, bearer, serve_in_thread
from tests.proxy.gateway_server import API_KEY, ISSUER, SECRET, build

REQUEST_SCOPED = {"FastExchange", "Waiting", "Outgoing", "Admitted", "_Request", "Found"}


@pytest.fixture
def fast_gateway(upstream: Server) -> Iterator[tuple[int, list[str]]]:
    settings = Settings(issuer=ISSUER, upstream=upstream.url, api_key=API_KEY, secret_key=SECRET)
    proxy = build(settings)
    fast_calls: list[str] = []

    class Counted:
        """The ProxyApp, counting the fast path's calls (the test must be on that path)."""

        def start(self, *args: Any) -> None:
            fast_calls.append("start")
            proxy.start(*args)

        def begin(self, *args: Any) -> Any:
            fast_calls.append("begin")
            return proxy.begin(*args)

        def finish(self, *args: Any) -> None:
            proxy.finish(*args)

    server = serve_in_thread(proxy, fast_proxy_protocol(Counted(), lambda path: True))
    try:
        yield server.port, fast_calls
    finally:
        server.stop()


class _Response:
    def __init__(self) -> None:
        self.done = False

    def on_message_complete(self) -> None:
        self.done = True


def _exchange(sock: socket.socket, request: bytes) -> int:
    """Send one request, read its whole response; its status."""
    response = _Response()
    parser = httptools.HttpResponseParser(response)
    sock.sendall(request)
    while not response.done:
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        parser.feed_data(chunk)
    return parser.get_status_code()


def test_fast_path_requests_leave_no_cycles(fast_gateway: tuple[int, list[str]]) -> None:
    port, fast_calls = fast_gateway
    token = bearer("read", "write")["Authorization"].encode()
    get = b"GET /api/memories HTTP/1.1\r\nHost: x\r\nAuthorization: " + token + b"\r\n\r\n"
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
    post = (
        b"POST /mcp HTTP/1.1\r\nHost: x\r\nAuthorization: " + token + b"\r\n"
        b"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body
    denied = b"GET /api/memories HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for request in (get, post, denied):  # warm: connections, caches
            _exchange(sock, request)
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(30):
                assert _exchange(sock, get) == 200
                assert _exchange(sock, post) == 200
                assert _exchange(sock, denied) == 401
            gc.collect()
            cyclic = [type(o).__name__ for o in gc.garbage if type(o).__name__ in REQUEST_SCOPED]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    assert fast_calls.count("start") >= 60  # the test is on the fast path
    assert fast_calls.count("begin") >= 30
    assert cyclic == []
