"""The proxy pipeline in-process: `ProxyApp(upstream=ASGIUpstream(app))`, no sockets.

The pipeline tests of test_forwarding.py (identity headers, credentials, request ids,
canonical paths, policy, challenges, JSON-RPC scopes, body limits) run here again with
the test upstream as an ASGI app in this process, through Starlette's TestClient
(the ASGI entry of ProxyApp). test_forwarding.py keeps running them on real sockets
on both server paths, and keeps framing, timeouts and disconnects to itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.proxy.inprocess import ASGIUpstream
from gateway.settings import Settings
from tests.proxy import upstream_app
from tests.proxy.gateway_server import API_KEY, ISSUER, SECRET, build
from tests.proxy.test_forwarding import (  # noqa: F401 - collected here again, in-process
    echoed,
    test_d5_missing_and_bad_tokens_get_challenges,
    test_d7_mcp_served_with_and_without_trailing_slash,
    test_j3_authorization_and_api_key_never_reach_upstream,
    test_jsonrpc_tool_call_needs_the_tools_scope,
    test_mcp_body_over_the_inspection_limit_is_413,
    test_mcp_session_and_last_event_id_pass_through,
    test_p1_identity_injected_and_spoofs_dropped,
    test_p2_path_tricks_cannot_reach_a_stricter_route,
    test_p2_uncanonicalisable_path_is_400_json,
    test_p2_upstream_receives_the_canonical_path,
    test_public_route_needs_no_token,
    test_request_id_generated_or_kept,
    test_unmatched_route_is_denied_without_reaching_upstream,
    test_upstream_hop_by_hop_response_headers_are_stripped,
)

# Loopback, and nothing listens on port 9: the in-process upstream is the only one
# reached, and the start-up tool listing (create_app's lifespan) is refused at once.
UPSTREAM_HOST = b"127.0.0.1:9"


def settings() -> Settings:
    return Settings(
        issuer=ISSUER,
        upstream=f"http://{UPSTREAM_HOST.decode()}",
        api_key=API_KEY,
        secret_key=SECRET,
        oauth_enabled=False,
    )


@pytest.fixture
def client() -> Iterator[Any]:
    """Starlette's TestClient: an httpx-compatible client (from its own httpx fork),
    which the imported tests use through httpx.Client's interface."""
    proxy = build(settings(), upstream=ASGIUpstream(upstream_app.app, host=UPSTREAM_HOST))
    # Not entered as a context manager: that would run a lifespan, which ProxyApp has not.
    http = TestClient(proxy, base_url="http://testserver", client=("127.0.0.1", 50000))
    yield http
    http.close()


def test_upstream_host_header_and_query_string(client: httpx.Client) -> None:
    body = echoed(client.get("/api/memories?q=a%20b&tag=x", headers={"X-API-Key": API_KEY}))
    assert body["query"] == "q=a%20b&tag=x"
    assert [v for k, v in body["headers"] if k == "host"] == [UPSTREAM_HOST.decode()]


def test_create_app_takes_the_upstream() -> None:
    """The composition root with an in-process upstream: the whole gateway, no socket."""
    quiet = dataclasses.replace(settings(), request_log=False)  # no log streams in tests
    gateway = create_app(quiet, upstream=ASGIUpstream(upstream_app.app))
    with TestClient(gateway.asgi(), base_url="http://testserver") as http:  # with lifespan
        denied = http.get("/api/memories")
        assert denied.status_code == 401
        answer: Any = http.get("/api/memories", headers={"Authorization": f"Bearer {API_KEY}"})
        body = echoed(answer)
        assert body["path"] == "/api/memories"
        assert ["x-auth-subject", "api-key"] in body["headers"]


def test_p4_a_failing_upstream_application_is_a_502() -> None:
    async def broken(scope: object, receive: object, send: object) -> None:
        raise RuntimeError("boom")

    proxy = build(settings(), upstream=ASGIUpstream(broken))
    response = TestClient(proxy, base_url="http://testserver").get(
        "/api/memories", headers={"X-API-Key": API_KEY}
    )
    assert response.status_code == 502
    assert response.json()["error"] == "bad_gateway"
    assert "boom" not in response.text


def test_remembered_routes_stay_bounded_and_invalid_paths_are_refused_each_time(
    client: httpx.Client,
) -> None:
    """ProxyApp remembers (method, raw path) → (canonical path, decision): a path refused
    as uncanonicalisable is refused every time (never remembered), long paths are not
    remembered, and many distinct paths do not grow it past its bound."""
    proxy = client.app  # type: ignore[attr-defined]
    key = {"X-API-Key": API_KEY}
    for _ in range(2):
        assert client.get("/api/memories/%2e%2e/%2fsecret", headers=key).status_code == 400
    for _ in range(2):
        assert client.get("/api/memories", headers=key).status_code == 200
    long_path = "/api/memories/" + "a" * 300
    assert client.get(long_path, headers=key).status_code == 200
    remembered = {path for _, path in proxy._routes}
    assert b"/api/memories" in remembered
    assert not any(b"%2f" in path or len(path) > 256 for path in remembered)
    for i in range(4200):
        proxy.route("GET", b"/api/memories/%d" % i)
    assert len(proxy._routes) <= 4096
