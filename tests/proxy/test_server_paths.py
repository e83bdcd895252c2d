"""The proxy on both server paths (the protocol fast path and uvicorn's ASGI path, see
the `gateway` fixture): HTTP behaviour a client sees at the connection level."""

from __future__ import annotations

import hashlib
import json
import socket

import httptools
import httpx
import pytest

from gateway.http_protocol import FAST_BODY_LIMIT
from tests.proxy.conftest import Server, bearer


class Responses:
    """httptools callbacks: the status and body of each response on a connection."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[tuple[int, bytes]] = []
        self.body = b""

    def on_message_begin(self) -> None:
        self.body = b""

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done.append((self.parser.get_status_code(), self.body))


def raw_exchange(port: int, data: bytes, responses: int) -> list[tuple[int, bytes]]:
    """Send `data` on one connection; the (status, body) of the first `responses`."""
    parsed = Responses()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        while len(parsed.done) < responses:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {parsed.done!r}"
            parsed.parser.feed_data(chunk)
    return parsed.done


def get(path: str, token: str, version: bytes = b"HTTP/1.1") -> bytes:
    return b"GET %s %s\r\nHost: x\r\nAuthorization: %s\r\n\r\n" % (
        path.encode(),
        version,
        token.encode(),
    )


def test_pipelined_requests_are_answered_in_order(gateway: Server) -> None:
    """Keep-alive pipelining: the second and third requests arrive while the first is
    still with the upstream; each gets its own response, in request order."""
    token = bearer("read")["Authorization"]
    sent = b"".join(get(f"/api/memories?n={n}", token) for n in range(3))
    sent += get("/api/nothing-here-without-a-token?n=3", "Bearer not-a-token")
    answered = raw_exchange(gateway.port, sent, 4)
    assert [status for status, _ in answered] == [200, 200, 200, 401]
    assert [json.loads(body)["query"] for _, body in answered[:3]] == ["n=0", "n=1", "n=2"]
    assert json.loads(answered[3][1])["error"] == "invalid_token"


def test_http_1_0_request_is_served_and_closed(gateway: Server) -> None:
    token = bearer("read")["Authorization"]
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(get("/api/memories", token, b"HTTP/1.0"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    parsed = Responses()
    parsed.parser.feed_data(data)  # everything up to the close the server made
    [(status, body)] = parsed.done
    assert status == 200
    assert json.loads(body)["path"] == "/api/memories"


def test_head_gets_the_head_only(client: httpx.Client) -> None:
    response = client.head("/api/memories", headers=bearer("read"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == b""
    # The connection is still in a clean state for the next request.
    assert client.get("/api/memories", headers=bearer("read")).status_code == 200


def test_p5_cors_preflight_and_actual_responses(client: httpx.Client) -> None:
    # The issuer is loopback (development): a loopback page is an allowed origin.
    origin = {"Origin": "http://localhost:5173"}
    preflight = client.options("/mcp", headers={**origin, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert preflight.headers["vary"] == "Origin"
    assert "Authorization" in preflight.headers["access-control-allow-headers"]
    ok = client.get("/api/memories", headers={**origin, **bearer("read")})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "http://localhost:5173"
    denied = client.get("/api/memories", headers=origin)
    assert denied.status_code == 401
    assert denied.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert "WWW-Authenticate" in denied.headers["access-control-expose-headers"]


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "null", "http://localhost.evil.example", "https://x:1/p"]
)
def test_foreign_origin_is_refused_with_403_even_with_a_valid_token(
    client: httpx.Client, origin: str
) -> None:
    headers = {"Origin": origin, **bearer("read", "write")}
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    for response in (
        client.post("/mcp", json=call, headers={**headers, "Accept": "application/json"}),
        client.get("/api/memories", headers=headers),  # bodyless: the fast path
        client.options("/mcp", headers={**headers, "Access-Control-Request-Method": "POST"}),
    ):
        assert response.status_code == 403
        assert response.json()["error"] == "access_denied"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize("origin", [None, "http://localhost:8000", "http://127.0.0.1:3000"])
def test_absent_same_or_loopback_origin_is_served(client: httpx.Client, origin: str | None) -> None:
    headers = bearer("read") | ({"Origin": origin} if origin else {})
    assert client.get("/api/memories", headers=headers).status_code == 200


def test_d6_insufficient_scope_on_a_bodyless_request(client: httpx.Client) -> None:
    response = client.delete("/api/memories/1", headers=bearer("read"))
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    assert response.json()["error"] == "insufficient_scope"


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE"])
def test_bodies_on_get_head_delete_are_refused_not_forwarded(
    client: httpx.Client, method: str
) -> None:
    response = client.request(
        method, "/api/memories/1", content=b"smuggled", headers=bearer("read", "write")
    )
    assert response.status_code == 400
    if method != "HEAD":
        assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    "name",
    ["X-HTTP-Method-Override", "X-Method-Override", "X-HTTP-Method", "X-Original-URL",
     "X-Rewrite-URL", "x_http_method_override"],
)  # fmt: skip
def test_method_and_url_override_headers_are_stripped(client: httpx.Client, name: str) -> None:
    response = client.get("/api/echo", headers={**bearer("read"), name: "DELETE"})
    assert response.status_code == 200
    seen = {k.lower().replace("_", "-") for k, _ in response.json()["headers"]}
    assert name.lower().replace("_", "-") not in seen


def _raw(gateway: Server, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


@pytest.mark.parametrize(
    "head",
    [b"GET /api/memories HTTP/1.1\r\n\r\n",
     b"GET /api/memories HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
     b"GET /healthz HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"],
)  # fmt: skip
def test_http11_without_exactly_one_host_is_refused(gateway: Server, head: bytes) -> None:
    answer = _raw(gateway, head)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"exactly one Host" in answer


def test_content_length_is_forwarded_in_canonical_form(gateway: Server, upstream: Server) -> None:
    token = bearer("read", "write")["Authorization"].encode()
    answer = _raw(
        gateway,
        b"POST /api/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: "
        + token + b"\r\nContent-Type: application/json\r\nContent-Length: 0002\r\n\r\n{}",
    )  # fmt: skip
    assert answer.startswith(b"HTTP/1.1 200 ")
    head, _, body = answer.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        parts, rest = [], body
        while True:
            size, _, rest = rest.partition(b"\r\n")
            if int(size, 16) == 0:
                break
            parts.append(rest[: int(size, 16)])
            rest = rest[int(size, 16) + 2 :]
        body = b"".join(parts)
    echoed = dict(json.loads(body)["headers"])
    assert echoed["content-length"] == "2"


# Request bodies: small ones with a Content-Length are read whole inside the protocol on
# the fast path, larger or chunked ones stream; the same answers either way.


def post(path: str, token: str | None, body: bytes, extra: bytes = b"") -> bytes:
    auth = b"Authorization: %s\r\n" % token.encode() if token else b""
    return (
        b"POST %s HTTP/1.1\r\nHost: x\r\n%s%sContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (path.encode(), auth, extra, len(body), body)
    )


def tool_call(name: str, request_id: int = 1) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": name}}


@pytest.mark.parametrize("size", [1, 1000, FAST_BODY_LIMIT, FAST_BODY_LIMIT + 1])
def test_request_body_reaches_the_upstream_whole(client: httpx.Client, size: int) -> None:
    body = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    response = client.post("/api/memories", content=body, headers=bearer("write"))
    assert response.status_code == 200
    seen = response.json()
    assert seen["body_size"] == size
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
    lengths = [v for k, v in seen["headers"] if k == "content-length"]
    assert lengths == [str(size)]


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"{not json", 400, "invalid_request"),
        (b"[]", 400, "invalid_request"),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}}', 400, None),
        (json.dumps([tool_call("retrieve_memory"), tool_call("store_memory", 2)]).encode(), 403,
         "insufficient_scope"),
    ],
)  # fmt: skip
def test_jsonrpc_refusals_are_the_same_on_both_paths(
    client: httpx.Client, body: bytes, status: int, error: str | None
) -> None:
    response = client.post("/mcp", content=body, headers=bearer("read"))
    assert response.status_code == status, response.text
    assert response.json()["error"] == (error or "invalid_request")


def test_unauthenticated_post_is_answered_before_its_body_is_sent(gateway: Server) -> None:
    body = json.dumps(tool_call("retrieve_memory")).encode()
    head, _, rest = post("/mcp", None, body).partition(b"\r\n\r\n")
    parsed = Responses()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(head + b"\r\n\r\n")
        while not parsed.done:
            chunk = sock.recv(65536)
            assert chunk, "connection closed"
            parsed.parser.feed_data(chunk)
        assert parsed.done[0][0] == 401
        # The unread body is skipped and the connection serves the next request.
        sock.sendall(rest + get("/api/memories", bearer("read")["Authorization"]))
        while len(parsed.done) < 2:
            chunk = sock.recv(65536)
            assert chunk, "connection closed"
            parsed.parser.feed_data(chunk)
    assert parsed.done[1][0] == 200


def test_pipelined_posts_with_bodies_are_answered_in_order(gateway: Server) -> None:
    token = bearer("read", "write")["Authorization"]
    sent = b"".join(
        post(f"/mcp?n={n}", token, json.dumps(tool_call("store_memory", n)).encode())
        for n in range(3)
    )
    sent += post("/mcp?n=3", token, b"{broken")
    sent += get("/api/memories?n=4", token)
    answered = raw_exchange(gateway.port, sent, 5)
    assert [status for status, _ in answered] == [200, 200, 200, 400, 200]
    assert [json.loads(body)["query"] for _, body in answered[:3]] == ["n=0", "n=1", "n=2"]
    assert json.loads(answered[4][1])["query"] == "n=4"


def test_body_split_across_many_writes_is_forwarded_whole(gateway: Server) -> None:
    token = bearer("read")["Authorization"]
    body = json.dumps({"query": "x" * 50_000}).encode()
    data = post("/api/search", token, body)
    parsed = Responses()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        for start in range(0, len(data), 7000):
            sock.sendall(data[start : start + 7000])
        while not parsed.done:
            chunk = sock.recv(65536)
            assert chunk, "connection closed"
            parsed.parser.feed_data(chunk)
    [(status, answer)] = parsed.done
    assert status == 200
    assert json.loads(answer)["body_sha256"] == hashlib.sha256(body).hexdigest()
