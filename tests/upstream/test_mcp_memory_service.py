"""The gateway in front of the real mcp-memory-service (see conftest.py).

Tokens come from the gateway's own OAuth flow (DCR, PKCE, auto consent) with exactly
the scope each test names; the upstream only ever sees the gateway's upstream key.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from typing import Any

import httpx

from tests.e2e.support import (
    LOOPBACK_REDIRECT,
    Pkce,
    authorize,
    authorize_params,
    code_grant,
    register,
)
from tests.upstream.conftest import (
    GATEWAY_KEY,
    UPSTREAM_KEY,
    VENV,
    VERSION,
    Stack,
    http,
    upstream_env,
)

MCP_HEADERS = {"Accept": "application/json, text/event-stream"}
# Names the standalone server accepts besides the ones it lists (its legacy aliases).
LEGACY_NAMES = ("delete_by_tag", "delete_by_timeframe", "cleanup_duplicates", "ingest_document")


def token(base: str, scope: str) -> str:
    with http(base) as client:
        if "admin" in scope.split():
            client_id = operator_client(client)
        else:
            client_id = register(client, scope="read write")
        pkce = Pkce.new()
        code = authorize(client, authorize_params(client_id, pkce, scope=scope))["code"]
        answer = code_grant(client, client_id, pkce, code)
        assert answer.status_code == 200, answer.text
        body = answer.json()
    assert set(body["scope"].split()) == set(scope.split()), body
    return str(body["access_token"])


def operator_client(client: httpx.Client) -> str:
    """A client registered with the gateway's API key: only such a one may hold admin."""
    answer = client.post(
        "/oauth/register",
        headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
        json={
            "client_name": "operator console",
            "redirect_uris": [LOOPBACK_REDIRECT],
            "token_endpoint_auth_method": "none",
            "scope": "read write admin",
        },
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["client_id"])


def rpc(base: str, access: str, message: object) -> httpx.Response:
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {access}"}
    with http(base) as client:
        return client.post("/mcp", json=message, headers=headers)


def call(name: str, arguments: dict[str, Any] | None = None, ident: int = 1) -> dict[str, Any]:
    params = {"name": name, "arguments": arguments or {}}
    return {"jsonrpc": "2.0", "id": ident, "method": "tools/call", "params": params}


def result(answer: httpx.Response) -> Any:
    """The JSON-RPC result of a JSON or SSE answer."""
    assert answer.status_code == 200, f"{answer.status_code} {answer.text[:300]}"
    text = answer.text
    if answer.headers.get("content-type", "").startswith("text/event-stream"):
        text = next(line[5:] for line in text.splitlines() if line.startswith("data:"))
    message = json.loads(text)
    assert "error" not in message, message
    return message["result"]


def assert_needs_write(answer: httpx.Response) -> None:
    assert answer.status_code == 403, f"{answer.status_code} {answer.text[:300]}"
    challenge = answer.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge, challenge
    scope = challenge.split('scope="', 1)[1].split('"', 1)[0].split()
    assert "write" in scope, challenge


def listed_tools(stack: Stack, access: str) -> list[dict[str, Any]]:
    listing = rpc(stack.gateway, access, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    tools: list[dict[str, Any]] = result(listing)["tools"]
    return tools


# --- the standalone MCP server (memory server --streamable-http) -----------------------


def test_read_token_gets_read_only_tools_and_403_write_for_every_other(
    standalone: Stack,
) -> None:
    read = token(standalone.gateway, "read")
    tools = listed_tools(standalone, read)
    read_only = [t["name"] for t in tools if (t.get("annotations") or {}).get("readOnlyHint")]
    others = [t["name"] for t in tools if t["name"] not in read_only]
    assert {"memory_search", "memory_list", "memory_health"} <= set(read_only), read_only
    assert {"memory_store", "memory_delete", "memory_update", "memory_cleanup"} <= set(others)
    for name in [*others, *LEGACY_NAMES, "no_such_tool"]:
        assert_needs_write(rpc(standalone.gateway, read, call(name, {"content": "x"})))
    for name in read_only:
        answer = rpc(standalone.gateway, read, call(name))
        # forwarded: the upstream answers (maybe a tool error for missing arguments)
        assert answer.status_code == 200, f"{name}: {answer.status_code} {answer.text[:200]}"
    # A batch is refused if any call in it needs more than the token holds.
    batch = [call("memory_search", {"query": "x"}, 1), call("memory_store", {"content": "x"}, 2)]
    assert_needs_write(rpc(standalone.gateway, read, batch))


def test_write_token_stores_and_read_token_finds_it(standalone: Stack) -> None:
    write = token(standalone.gateway, "read write")
    content = f"stored through the gateway {secrets.token_hex(6)}"
    stored = result(rpc(standalone.gateway, write, call("memory_store", {"content": content})))
    assert not stored.get("isError"), stored
    read = token(standalone.gateway, "read")
    found = result(rpc(standalone.gateway, read, call("memory_search", {"query": content})))
    assert content in json.dumps(found), found


def test_standalone_refuses_anonymous_calls_on_its_own_port(standalone: Stack) -> None:
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    answer = httpx.post(f"{standalone.upstream}/mcp", json=listing, headers=MCP_HEADERS)
    assert answer.status_code == 401, answer.text
    keyed = {**MCP_HEADERS, "Authorization": f"Bearer {UPSTREAM_KEY}"}
    assert httpx.post(f"{standalone.upstream}/mcp", json=listing, headers=keyed).status_code == 200


# --- the web app (memory server --http) ------------------------------------------------


def test_rest_reads_and_writes_through_the_gateway(web: Stack) -> None:
    write = token(web.gateway, "read write")
    read = token(web.gateway, "read")
    content = f"rest through the gateway {secrets.token_hex(6)}"
    with http(web.gateway) as client:
        as_writer = {"Authorization": f"Bearer {write}"}
        as_reader = {"Authorization": f"Bearer {read}"}
        stored = client.post("/api/memories", json={"content": content}, headers=as_writer)
        assert stored.status_code == 200, stored.text
        assert stored.json()["success"] is True, stored.text
        listed = client.get("/api/memories", headers=as_reader)
        assert listed.status_code == 200, listed.text
        assert content in listed.text, listed.text[:300]
        found = client.post("/api/search", json={"query": content}, headers=as_reader)
        assert found.status_code == 200, found.text
        assert content in found.text, found.text[:300]
        refused = client.post("/api/memories", json={"content": "no"}, headers=as_reader)
        assert refused.status_code == 403
        # upstream needs write for its statistics routes, and so does the gateway now
        for path in ("/api/memory-stats", "/api/manage/tags/stats", "/api/manage/untagged/count"):
            assert client.get(path, headers=as_reader).status_code == 403, path
            assert client.get(path, headers=as_writer).status_code == 200, path
        assert client.get("/api/health").status_code == 200
        assert client.get("/mcp/health").status_code == 200
        assert client.get("/", headers=as_reader).status_code == 200
        assert client.get("/api-overview", headers=as_reader).status_code == 200
        assert client.get("/openapi.json", headers=as_reader).status_code == 200
        assert client.get("/mcp/tools", headers=as_reader).status_code == 200
        assert client.get("/", headers={}).status_code == 401


def test_admin_route_needs_admin_at_the_gateway(web: Stack) -> None:
    admin = token(web.gateway, "read write admin")
    write = token(web.gateway, "read write")
    with http(web.gateway) as client:
        denied = client.get("/api/config/credentials", headers={"Authorization": f"Bearer {write}"})
        assert denied.status_code == 403, denied.text
        assert 'scope="admin"' in denied.headers["www-authenticate"]
        allowed = client.get(
            "/api/config/credentials", headers={"Authorization": f"Bearer {admin}"}
        )
        assert allowed.status_code == 200, allowed.text


def test_web_app_refuses_anonymous_calls_on_its_own_port(web: Stack) -> None:
    assert httpx.get(f"{web.upstream}/api/memories").status_code == 401
    keyed = {"Authorization": f"Bearer {UPSTREAM_KEY}"}
    assert httpx.get(f"{web.upstream}/api/memories", headers=keyed).status_code == 200


def test_web_apps_mcp_tools_follow_their_annotations(web: Stack) -> None:
    """Its /mcp (10.59.0: tools without annotations) fails closed: every tool it does
    not declare read-only needs write (a policy file can name the read ones)."""
    read = token(web.gateway, "read")
    tools = listed_tools(web, read)
    assert tools
    for tool in tools:
        answer = rpc(web.gateway, read, call(tool["name"], {"query": "x"}))
        if (tool.get("annotations") or {}).get("readOnlyHint") is True:
            assert answer.status_code == 200, f"{tool['name']}: {answer.text[:200]}"
        else:
            assert_needs_write(answer)
    write = token(web.gateway, "read write")
    answer = rpc(web.gateway, write, call(tools[0]["name"], {"query": "x"}))
    assert answer.status_code == 200, answer.text


def test_upstream_key_never_reaches_clients_or_the_log(web: Stack) -> None:
    write = token(web.gateway, "read write")
    with http(web.gateway) as client:
        answer = client.get("/api/memories", headers={"Authorization": f"Bearer {write}"})
    assert UPSTREAM_KEY not in answer.text
    assert all(UPSTREAM_KEY not in value for value in answer.headers.values())
    assert UPSTREAM_KEY not in web.log.read_text()


def test_default_policy_covers_every_upstream_route(web: Stack, tmp_path: Any) -> None:
    """Every route of the web app is known to the gateway's default policy and needs at
    least the scope upstream itself asks for (docs/policy.md lists them)."""
    from gateway.policy import Policy

    script = os.path.join(os.path.dirname(__file__), "routes.py")
    env = {**os.environ, **upstream_env(tmp_path)}
    output = subprocess.run(
        [str(VENV / "bin" / "python"), script],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    policy = Policy.default()
    rank = {"none": 0, "static": 0, "read": 1, "write": 2, "admin": 3}
    problems = []
    routes = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert len(routes) > 50, output[:500]
    for route in routes:
        path = route["path"].replace("{", "").replace("}", "").replace("/*", "/app.js")
        path = path.replace(":path", "")
        if path.startswith(("/oauth", "/.well-known")):
            continue  # the gateway's own authorization server answers these
        for method in route["methods"]:
            decision = policy.match(method, path)
            if decision is None:
                problems.append(f"{method} {route['path']}: denied by the gateway")
                continue
            held = max((rank[s] for s in decision.scopes), default=0)
            if not decision.public and held < rank[route["needs"]]:
                problems.append(f"{method} {route['path']}: upstream {route['needs']}")
            if decision.public and route["needs"] not in ("none", "static"):
                problems.append(f"{method} {route['path']}: public, upstream {route['needs']}")
    assert not problems, f"mcp-memory-service {VERSION}: " + "; ".join(problems)
