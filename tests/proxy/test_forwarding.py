"""The proxy on real sockets: gateway subprocess → test upstream subprocess."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.proxy.conftest import Server, bearer, start_gateway, start_upstream


def echoed(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    document: dict[str, Any] = json.loads(response.text)
    return document


def upstream_headers(response: httpx.Response) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in echoed(response)["headers"]:
        found.setdefault(name, []).append(value)
    return found


def test_p1_identity_injected_and_spoofs_dropped(client: httpx.Client) -> None:
    spoofs = {
        "X-Auth-Subject": "mallory",
        "X_Auth_Scopes": "admin",
        "x.auth.client.id": "evil",
        "X-Forwarded-For": "6.6.6.6",
        "Forwarded": "for=6.6.6.6",
    }
    response = client.get("/api/memories", headers={**bearer("read"), **spoofs})
    seen = upstream_headers(response)
    assert seen["x-auth-subject"] == ["alice"]
    assert seen["x-auth-client-id"] == ["client-1"]
    assert seen["x-auth-scopes"] == ["read"]
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert "forwarded" not in seen
    assert "6.6.6.6" not in response.text
    assert "mallory" not in response.text


def test_j3_authorization_and_api_key_never_reach_upstream(client: httpx.Client) -> None:
    seen = upstream_headers(client.get("/api/memories", headers=bearer("read")))
    assert "authorization" not in seen
    seen = upstream_headers(client.get("/api/memories", headers={"X-API-Key": "test-api-key"}))
    assert "x-api-key" not in seen
    assert seen["x-auth-scopes"] == ["admin read write"]


def test_request_id_generated_or_kept(client: httpx.Client) -> None:
    seen = upstream_headers(client.get("/api/m", headers={**bearer("read"), "X-Request-Id": "r-1"}))
    assert seen["x-request-id"] == ["r-1"]
    seen = upstream_headers(client.get("/api/m", headers={**bearer("read"), "X-Request-Id": "a b"}))
    assert seen["x-request-id"] != ["a b"]
    assert len(seen["x-request-id"][0]) == 24


def test_upstream_host_header_and_query_string(client: httpx.Client, upstream: Server) -> None:
    response = client.get("/api/memories?q=a%20b&tag=x", headers=bearer("read"))
    body = echoed(response)
    assert body["query"] == "q=a%20b&tag=x"
    assert upstream_headers(response)["host"] == [f"127.0.0.1:{upstream.port}"]


def test_upstream_hop_by_hop_response_headers_are_stripped(client: httpx.Client) -> None:
    response = client.get("/api/memories", headers=bearer("read"))
    assert "x-upstream-private" not in response.headers
    assert "keep-alive" not in response.headers


@pytest.mark.parametrize(
    "path",
    [
        "/api/../api/server/x",
        "/api/%2e%2e/api/server/x",
        "/api//server/x",
        "/api;x/server/x",
        "/api/memories/../../api/admin",
        "/%61pi/config/x",
    ],
)
def test_p2_path_tricks_cannot_reach_a_stricter_route(client: httpx.Client, path: str) -> None:
    response = client.get(path, headers=bearer("read"))
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"


@pytest.mark.parametrize(
    "path", ["/api/a%2fb", "/api/a%5Cb", "/api/%00", "/api/%zz", "/api/%ff", "/api/%2e%2e/%2e%2e/x"]
)
def test_p2_uncanonicalisable_path_is_400_json(client: httpx.Client, path: str) -> None:
    response = client.get(path, headers=bearer("admin", "read"))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_p2_upstream_receives_the_canonical_path(client: httpx.Client) -> None:
    body = echoed(client.get("/api/./x/../%6demories//1;v=2?z=1", headers=bearer("read")))
    assert body["raw_path"] == "/api/memories/1"
    assert body["query"] == "z=1"


@pytest.mark.parametrize("path", ["/mcp", "/mcp/"])
def test_d7_mcp_served_with_and_without_trailing_slash(client: httpx.Client, path: str) -> None:
    response = client.get(path, headers=bearer("read"))
    assert response.status_code == 200
    assert echoed(response)["path"] == path


def test_unmatched_route_is_denied_without_reaching_upstream(client: httpx.Client) -> None:
    response = client.get("/etc/passwd", headers=bearer("admin", "read", "write"))
    assert response.status_code == 403
    assert response.json()["error"] == "access_denied"


def test_d5_missing_and_bad_tokens_get_challenges(client: httpx.Client) -> None:
    response = client.get("/api/memories")
    assert response.status_code == 401
    assert "resource_metadata=" in response.headers["www-authenticate"]
    response = client.get("/api/memories", headers={"Authorization": "Bearer not-a-jwt"})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_public_route_needs_no_token(client: httpx.Client) -> None:
    seen = upstream_headers(client.get("/api/health", headers={"X-Auth-Subject": "mallory"}))
    assert "x-auth-subject" not in seen


def test_jsonrpc_tool_call_needs_the_tools_scope(client: httpx.Client) -> None:
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "store_memory", "arguments": {}},
    }
    raw = json.dumps(call).encode()
    response = client.post("/mcp", content=raw, headers=bearer("read"))
    assert response.status_code == 403
    assert 'scope="read write"' in response.headers["www-authenticate"]
    body = echoed(client.post("/mcp", content=raw, headers=bearer("read", "write")))
    assert body["body_size"] == len(raw)


def test_mcp_body_over_the_inspection_limit_is_413(client: httpx.Client) -> None:
    response = client.post(
        "/mcp",
        content=b"[" + b" " * (4 * 1024 * 1024 + 1) + b"]",
        headers={**bearer("read"), "Content-Type": "application/json"},
    )
    assert response.status_code == 413


def test_chunked_request_body_is_streamed(client: httpx.Client) -> None:
    def parts() -> Iterator[bytes]:  # no length known: httpx sends Transfer-Encoding: chunked
        for _ in range(10):
            yield b"y" * 1000

    response = client.post("/api/memories", content=parts(), headers=bearer("write"))
    assert echoed(response)["body_size"] == 10_000


def test_mcp_session_and_last_event_id_pass_through(client: httpx.Client) -> None:
    headers = {**bearer("read"), "Mcp-Session-Id": "s-1", "Last-Event-ID": "41"}
    seen = upstream_headers(client.get("/mcp", headers=headers))
    assert seen["mcp-session-id"] == ["s-1"]
    assert seen["last-event-id"] == ["41"]


def test_keep_alive_connections_are_reused(client: httpx.Client) -> None:
    ports = set()
    for _ in range(20):
        # The echo shows nothing about the upstream socket; the sequence staying fast and
        # correct across pooled reuse is the observable behaviour.
        ports.add(echoed(client.get("/api/memories", headers=bearer("read")))["path"])
    assert ports == {"/api/memories"}


def test_p4_upstream_down_is_502_and_recovers() -> None:
    upstream = start_upstream()
    port = upstream.port
    gateway = start_gateway(upstream.url)
    try:
        with httpx.Client(base_url=gateway.url, timeout=10) as http:
            assert http.get("/api/memories", headers=bearer("read")).status_code == 200
            upstream.stop()
            response = http.get("/api/memories", headers=bearer("read"))
            assert response.status_code == 502
            assert response.json()["error"] == "bad_gateway"
            upstream = start_upstream(port)
            assert http.get("/api/memories", headers=bearer("read")).status_code == 200
    finally:
        upstream.stop()
        gateway.stop()


def test_p4_slow_response_headers_are_504(client: httpx.Client) -> None:
    started = time.monotonic()
    response = client.get("/api/slow?delay=5", headers=bearer("read"))
    assert response.status_code == 504
    assert response.json()["error"] == "gateway_timeout"
    assert time.monotonic() - started < 3


def test_p3_idle_stream_is_cut_after_the_idle_timeout(client: httpx.Client) -> None:
    started = time.monotonic()
    received: list[bytes] = []

    def read_all() -> None:
        with client.stream("GET", "/api/stall?delay=30", headers=bearer("read")) as response:
            assert response.status_code == 200
            received.extend(response.iter_raw())

    with pytest.raises(httpx.RemoteProtocolError):
        read_all()
    assert b"".join(received) == b"data: first\n\n"
    assert 1.0 < time.monotonic() - started < 5


def test_p4_client_disconnect_closes_the_upstream_request(
    gateway: Server, upstream: Server
) -> None:
    token = bearer("read")["Authorization"]
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(
            b"GET /api/endless?tag=t1 HTTP/1.1\r\nHost: x\r\nAuthorization: "
            + token.encode()
            + b"\r\n\r\n"
        )
        assert b"200" in sock.recv(4096)
        time.sleep(0.2)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        events = httpx.get(f"{upstream.url}/_events").json()
        if "disconnect:t1" in events:
            break
        time.sleep(0.05)
    assert "disconnect:t1" in events
    assert time.monotonic() < deadline
