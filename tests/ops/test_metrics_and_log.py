"""Metrics scraped after real traffic, and the request log on both server paths.

The gateway is the real `memory-gateway serve` process; bodyless proxied requests take
the protocol fast path (gateway.http_protocol), requests with a body and the OAuth
endpoints take the ASGI path, so both are exercised and both must be logged and counted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.ops.support import (
    API_KEY,
    Gateway,
    metric,
    oauth_flow,
    refresh,
    start_gateway,
)
from tests.proxy.conftest import Server, start_upstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[Server]:
    server = start_upstream()
    yield server
    server.stop()


@pytest.fixture
def gateway(tmp_path: Path, upstream: Server) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path, upstream.url, {"MCP_GATEWAY_RESPONSE_TIMEOUT": "1"})
    yield gw
    gw.stop()


def test_metrics_after_real_traffic_carry_the_right_counts_and_no_secret(
    gateway: Gateway,
) -> None:
    tokens = oauth_flow(gateway.url)  # register, authorize, token: the ASGI path
    renewed = refresh(gateway.url, tokens)
    bearer = {"Authorization": f"Bearer {renewed.access_token}"}
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        for _ in range(7):  # fast path
            assert http.get("/api/memories", headers=bearer).status_code == 200
        for _ in range(3):  # no credentials
            assert http.get("/api/memories").status_code == 401
        bad = {"Authorization": "Bearer not-a-token"}
        assert http.get("/api/memories", headers=bad).status_code == 401
        old = {"Authorization": f"Bearer {tokens.access_token}"}
        assert http.get("/api/memories", headers=old).status_code == 200
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "retrieve_memory", "arguments": {"query": "x"}}}  # fmt: skip
        for _ in range(2):
            assert http.post("/mcp", json=call, headers=bearer).status_code == 200
        assert http.get("/api/slow", params={"delay": "3"}, headers=bearer).status_code == 504
        revoked = http.post(
            "/oauth/revoke", data={"token": tokens.access_token, "client_id": tokens.client_id}
        )
        assert revoked.status_code == 200
        assert http.get("/api/memories", headers=old).status_code == 401
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").status_code == 200

        # An open event stream shows in the gauge while it lasts.
        opened = threading.Event()

        def stream() -> None:
            with http.stream("GET", "/api/sse", params={"n": "10", "interval": "0.1"},
                             headers=bearer) as response:  # fmt: skip
                opened.set()
                for _ in response.iter_bytes():
                    pass

        reader = threading.Thread(target=stream)
        reader.start()
        assert opened.wait(5)
        time.sleep(0.2)
        during = gateway.metrics()
        reader.join(10)
    assert metric(during, "mcp_gateway_open_streams") == 1
    assert metric(during, "mcp_gateway_open_connections") >= 1

    text = gateway.metrics()
    assert metric(text, "mcp_gateway_requests_total", route="rest", status="200") == 9
    assert metric(text, "mcp_gateway_requests_total", route="rest", status="401") == 5
    assert metric(text, "mcp_gateway_requests_total", route="rest", status="504") == 1
    assert metric(text, "mcp_gateway_requests_total", route="mcp", status="200") == 2
    assert metric(text, "mcp_gateway_requests_total", route="oauth_register", status="201") == 1
    assert metric(text, "mcp_gateway_requests_total", route="oauth_authorize", status="302") == 1
    assert metric(text, "mcp_gateway_requests_total", route="oauth_token", status="200") == 2
    assert metric(text, "mcp_gateway_requests_total", route="oauth_revoke", status="200") == 1
    # + the start-up wait of the test harness
    assert metric(text, "mcp_gateway_requests_total", route="health", status="200") == 3
    assert metric(text, "mcp_gateway_mcp_requests_total", method="tools/call",
                  tool="retrieve_memory") == 2  # fmt: skip
    assert metric(text, "mcp_gateway_auth_failures_total", reason="missing") == 3
    assert metric(text, "mcp_gateway_auth_failures_total", reason="invalid_token") == 1
    assert metric(text, "mcp_gateway_auth_failures_total", reason="revoked") == 1
    assert metric(text, "mcp_gateway_tokens_total", event="issued",
                  grant="authorization_code") == 1  # fmt: skip
    assert metric(text, "mcp_gateway_tokens_total", event="refreshed", grant="refresh_token") == 1
    assert metric(text, "mcp_gateway_tokens_total", event="revoked", grant="access_token") == 1
    assert metric(text, "mcp_gateway_upstream_errors_total", status="504") == 1
    # Every forwarded request has an upstream latency: 9 (the stream included) + 2 + 1.
    assert metric(text, "mcp_gateway_upstream_response_seconds_count") == 12
    assert metric(text, "mcp_gateway_open_streams") == 0
    assert metric(text, "mcp_gateway_store_operation_seconds_count", operation="save_code") == 1
    assert metric(text, "mcp_gateway_store_errors_total", operation="save_code") == 0

    for secret in (API_KEY, tokens.access_token, renewed.access_token, tokens.refresh_token,
                   renewed.refresh_token, tokens.client_id):  # fmt: skip
        assert secret
        assert secret not in text
    # The metrics are on their own listener only.
    public = httpx.get(f"{gateway.url}/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
    assert "mcp_gateway_requests_total" not in public.text


def test_request_log_lines_on_both_paths_are_json_and_never_hold_a_token(
    gateway: Gateway,
) -> None:
    tokens = oauth_flow(gateway.url)
    token = tokens.access_token
    bearer = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        fast = http.get("/api/memories", params={"q": "alpha"}, headers=bearer)
        assert fast.status_code == 200
        asgi = http.post("/api/memories", json={"content": "x"}, headers=bearer)
        assert asgi.status_code == 200
        # The token in every place a client can put it.
        http.get("/api/memories", params={"access_token": token})
        http.get(f"/api/memories/{token}", headers=bearer)
        http.get("/api/memories", headers={"X-API-Key": token})
        http.get("/api/memories", headers={**bearer, "Cookie": f"session={token}"})
        http.get("/api/memories", headers={**bearer, "X-Request-Id": token})
        http.post("/api/memories", data={"access_token": token}, headers=bearer)
        http.post("/api/memories", json={"token": token}, headers=bearer)
        http.post("/oauth/revoke", data={"token": token, "client_id": tokens.client_id})
        http.get("/api/memories", headers={"X-API-Key": API_KEY, "X-Request-Id": API_KEY})
        http.get(f"/api/{API_KEY}", params={"key": API_KEY}, headers={"X-API-Key": API_KEY})
    lines = gateway.request_lines()
    everything = gateway.log()
    for secret in (token, API_KEY, tokens.refresh_token):
        assert secret
        assert secret not in everything
    assert "alpha" not in everything  # no query string
    by_path = {(line["method"], line["path"], line["status"]) for line in lines}
    assert ("GET", "/api/memories", 200) in by_path  # fast path
    assert ("POST", "/api/memories", 200) in by_path  # ASGI path
    assert ("POST", "/oauth/token", 200) in by_path  # authorization server
    assert ("GET", "/api/memories/[redacted]", 200) in by_path
    assert ("GET", "/api/[redacted]", 200) in by_path or ("GET", "/api/[redacted]", 403) in by_path
    fields = {"time", "request_id", "client", "method", "path", "status", "bytes",
              "duration_ms", "upstream_ms", "client_id", "subject"}  # fmt: skip
    for line in lines:
        assert fields <= set(line)
        assert "?" not in str(line["path"])
    served = [line for line in lines if line["path"] == "/api/memories" and line["status"] == 200]
    by_token = [line for line in served if line["subject"] != "api-key"]
    assert all(line["client_id"] == tokens.client_id for line in by_token)
    assert all(isinstance(line["upstream_ms"], float) for line in served)
    assert all(line["request_id"] for line in served)
    assert all(int(str(line["bytes"])) > 0 for line in served)


def test_text_request_log_in_development(tmp_path: Path, upstream: Server) -> None:
    gw = start_gateway(tmp_path, upstream.url, {"MCP_GATEWAY_LOG_FORMAT": "text"}, metrics=False)
    try:
        with httpx.Client(base_url=gw.url, timeout=10) as http:
            assert http.get("/api/memories", headers={"X-API-Key": API_KEY}).status_code == 200
        time.sleep(0.6)
        line = next(li for li in gw.log().splitlines() if '"GET /api/memories"' in li)
        assert " 200 " in line
        assert "subject=api-key" in line
        assert "upstream=" in line
    finally:
        gw.stop()


def test_rate_limit_refusals_and_metadata_document_fetches_are_counted(
    tmp_path: Path, upstream: Server
) -> None:
    gw = start_gateway(tmp_path, upstream.url, {"MCP_OAUTH_RATE_LIMIT_PER_MINUTE": "2"})
    try:
        with httpx.Client(base_url=gw.url, timeout=10) as http:
            bad = {"Authorization": "Bearer not-a-token"}
            statuses = [http.get("/api/memories", headers=bad).status_code for _ in range(4)]
            # A metadata-document client on a private address is refused (not fetched).
            refused = http.get("/oauth/authorize", params={
                "client_id": "https://127.0.0.1:9/client.json", "response_type": "code",
                "redirect_uri": "https://127.0.0.1:9/cb", "code_challenge": "x" * 43,
                "code_challenge_method": "S256",
            })  # fmt: skip
        assert statuses == [401, 401, 401, 429]  # refused once past the limit
        assert refused.status_code == 400
        text = gw.metrics()
        assert metric(text, "mcp_gateway_rate_limited_total", route="rest") == 1
        assert metric(text, "mcp_gateway_requests_total", route="rest", status="429") == 1
        # Every guess is verified first (issue 9: a valid token from the same address is
        # never locked out), so the fourth is an invalid token as well as a 429.
        assert metric(text, "mcp_gateway_auth_failures_total", reason="invalid_token") == 4
        assert metric(text, "mcp_gateway_cimd_fetches_total", outcome="refused") == 1
    finally:
        gw.stop()
