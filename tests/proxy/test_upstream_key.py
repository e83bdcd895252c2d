"""MCP_GATEWAY_UPSTREAM_API_KEY on both server paths: the protocol fast path (bodyless
requests) and the ASGI path (requests with a body, or every request with
protocol=asgi). The upstream sees `Authorization: Bearer <key>` exactly once, never
the client's credential; the client never sees the key."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.proxy.conftest import Server, bearer, start_gateway

KEY = "the-upstreams-own-key-0123456789"


@pytest.fixture(scope="module", params=["fast", "asgi"])
def keyed(upstream: Server, request: pytest.FixtureRequest) -> Iterator[Server]:
    server = start_gateway(upstream.url, f"upstream_api_key={KEY}", f"protocol={request.param}")
    yield server
    server.stop()


def upstream_credentials(answer: httpx.Response) -> list[tuple[str, str]]:
    assert answer.status_code == 200, answer.text
    headers = answer.json()["headers"]
    return [(k, v) for k, v in headers if k.lower() in ("authorization", "x-api-key")]


@pytest.mark.parametrize("method", ["GET", "DELETE", "POST", "PUT"])
def test_upstream_key_is_sent_on_every_forwarded_request(keyed: Server, method: str) -> None:
    client_token = bearer("read", "write")
    with httpx.Client(base_url=keyed.url, timeout=10) as http:
        if method == "GET":
            answer = http.get("/api/memories", headers=client_token)
        elif method == "DELETE":
            answer = http.delete("/api/memories/abc", headers=client_token)
        else:
            answer = http.request(method, "/api/memories", headers=client_token, json={"a": 1})
    assert upstream_credentials(answer) == [("authorization", f"Bearer {KEY}")]
    assert KEY not in "".join(f"{k}{v}" for k, v in answer.headers.items())


def test_client_api_key_header_is_replaced_too(keyed: Server) -> None:
    with httpx.Client(base_url=keyed.url, timeout=10) as http:
        answer = http.get("/api/memories", headers={"X-API-Key": "test-api-key"})
    assert upstream_credentials(answer) == [("authorization", f"Bearer {KEY}")]


def test_without_the_setting_no_credential_goes_upstream(client: httpx.Client) -> None:
    answer = client.get("/api/memories", headers=bearer("read"))
    assert upstream_credentials(answer) == []
