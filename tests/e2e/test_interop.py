"""Interoperability details real MCP clients trip on, each checked on the live gateway
the way a client sees it (HTTPS, real sockets, no in-process shortcuts)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.support import (
    LOOPBACK_REDIRECT,
    Pkce,
    authorize,
    authorize_params,
    code_grant,
    http_client,
    jwt_claims,
    register,
    token_for,
)
from tests.integration.live import LiveGateway

AS_METADATA = (
    "/.well-known/oauth-authorization-server",
    "/.well-known/oauth-authorization-server/mcp",
    "/.well-known/openid-configuration",
    "/.well-known/openid-configuration/mcp",
)
PRM = ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp")
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "interop", "version": "1"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


@pytest.fixture
def http(gateway: LiveGateway) -> Iterator[httpx.Client]:
    with http_client(gateway) as client:
        yield client


def documents(http: httpx.Client, paths: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    answers = {path: http.get(path) for path in paths}
    assert {p: a.status_code for p, a in answers.items()} == dict.fromkeys(paths, 200)
    return {path: answer.json() for path, answer in answers.items()}


def nulls(value: object, where: str = "$") -> list[str]:
    if value is None:
        return [where]
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in nulls(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [n for i, v in enumerate(value) for n in nulls(v, f"{where}[{i}]")]
    return []


def test_d1_issuer_is_byte_identical_everywhere(gateway: LiveGateway, http: httpx.Client) -> None:
    """D1: metadata `issuer`, PRM `authorization_servers[0]`, JWT `iss` and the authorize
    response `iss` are the same string, origin only, without a trailing slash."""
    issuer = gateway.url
    assert not issuer.endswith("/")
    for path, doc in documents(http, AS_METADATA).items():
        assert doc["issuer"] == issuer, path
    for path, doc in documents(http, PRM).items():
        assert doc["authorization_servers"] == [issuer], path
    assert http.get(PRM[1]).json()["resource"] == f"{issuer}/mcp"
    client_id = register(http)
    pkce = Pkce.new()
    redirect = authorize(http, authorize_params(client_id, pkce))
    assert redirect["iss"] == issuer
    body = code_grant(http, client_id, pkce, redirect["code"]).json()
    assert jwt_claims(body["access_token"])["iss"] == issuer
    challenge = http.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
    assert f'resource_metadata="{issuer}{PRM[1]}"' in challenge.headers["www-authenticate"]


def test_d3_response_types_and_none_auth_method_advertised(http: httpx.Client) -> None:
    """D3: a client that checks `response_types_supported` or looks for `none` before
    registering as a public client finds both, with S256 as the only PKCE method."""
    for path, doc in documents(http, AS_METADATA).items():
        assert doc["response_types_supported"] == ["code"], path
        assert "none" in doc["token_endpoint_auth_methods_supported"], path
        assert doc["code_challenge_methods_supported"] == ["S256"], path
        assert {"authorization_code", "refresh_token"} <= set(doc["grant_types_supported"])


def test_d3_no_null_in_any_document_a_client_parses(http: httpx.Client) -> None:
    """D3: metadata, PRM, registration and token responses never carry `null`
    (the TypeScript SDK's schemas reject null for optional fields)."""
    found = {path: nulls(doc) for path, doc in documents(http, AS_METADATA + PRM).items()}
    registered = http.post(
        "/oauth/register",
        json={"client_name": "nulls", "redirect_uris": [LOOPBACK_REDIRECT], "scope": "read"},
    )
    assert registered.status_code == 201
    found["register"] = nulls(registered.json())
    _, token = token_for(http, scope="read offline_access")
    found["token"] = nulls(token)
    assert {where: hits for where, hits in found.items() if hits} == {}


def test_t3_expires_in_sent_on_code_and_refresh_grants(http: httpx.Client) -> None:
    """T3: `expires_in` is always present (clients schedule refresh from it), with
    no-store caching, for the code grant and for a refresh."""
    client_id, token = token_for(http, scope="read offline_access")
    assert isinstance(token["expires_in"], int)
    assert token["expires_in"] > 0
    refreshed = http.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": token["refresh_token"],
            "client_id": client_id,
        },
    )
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.headers["cache-control"] == "no-store"
    assert isinstance(refreshed.json()["expires_in"], int)
    assert refreshed.json()["expires_in"] > 0


@pytest.mark.parametrize("path", ["/mcp", "/mcp/"])
def test_d7_mcp_served_with_and_without_trailing_slash(http: httpx.Client, path: str) -> None:
    """D7: both spellings answer directly (no 307 a client would have to follow with
    its Authorization header): 401 challenge without a token, the MCP answer with one."""
    anonymous = http.post(path, json=INITIALIZE, headers=MCP_HEADERS)
    assert anonymous.status_code == 401
    assert "location" not in anonymous.headers
    _, token = token_for(http, scope="read")
    auth = {**MCP_HEADERS, "Authorization": f"Bearer {token['access_token']}"}
    answer = http.post(path, json=INITIALIZE, headers=auth)
    assert answer.status_code == 200, answer.text
    assert "location" not in answer.headers
    assert "memory-backend" in answer.text


@pytest.mark.parametrize("spelling", ["{issuer}/mcp", "{issuer}/mcp/", "{ISSUER}/mcp"])
def test_a4_resource_accepted_with_or_without_trailing_slash(
    gateway: LiveGateway, http: httpx.Client, spelling: str
) -> None:
    """A4: `resource` compared canonically (trailing slash, scheme/host case); the token
    is issued for `{issuer}/mcp` and works on /mcp."""
    resource = spelling.format(issuer=gateway.url, ISSUER=gateway.url.upper())
    _, token = token_for(http, scope="read", resource=resource)
    assert jwt_claims(token["access_token"])["aud"] in (
        f"{gateway.url}/mcp",
        [f"{gateway.url}/mcp"],
    )
    auth = {**MCP_HEADERS, "Authorization": f"Bearer {token['access_token']}"}
    assert http.post("/mcp", json=INITIALIZE, headers=auth).status_code == 200


@pytest.mark.parametrize("port", [1024, 40123, 65535])
def test_a2_loopback_redirect_matches_on_any_port(http: httpx.Client, port: int) -> None:
    """A2 (RFC 8252 §7.3): a native client registers one loopback URI and listens on
    whatever port it got; the code comes back to that port and redeems there."""
    client_id = register(http)
    pkce = Pkce.new()
    redirect_uri = f"http://127.0.0.1:{port}/callback"
    redirect = authorize(http, authorize_params(client_id, pkce, redirect_uri=redirect_uri))
    answer = code_grant(http, client_id, pkce, redirect["code"], redirect_uri=redirect_uri)
    assert answer.status_code == 200, answer.text


def test_a2_loopback_any_port_still_requires_same_path(http: httpx.Client) -> None:
    """A2: only the port is free; another path is refused with a page, never a redirect."""
    client_id = register(http)
    params = authorize_params(
        client_id, Pkce.new(), redirect_uri="http://127.0.0.1:40123/elsewhere"
    )
    answer = http.get("/oauth/authorize", params=params)
    assert answer.status_code == 400
    assert "location" not in answer.headers


def test_a5_offline_access_grants_refresh_token_only_when_asked(http: httpx.Client) -> None:
    """A5/T5: `offline_access` yields a refresh token and is granted like any scope;
    without it there is no refresh token; PRM does not list it (D4), AS metadata does."""
    _, offline = token_for(http, scope="read offline_access")
    assert offline["refresh_token"]
    assert "offline_access" in offline["scope"].split()
    _, online = token_for(http, scope="read")
    assert "refresh_token" not in online
    assert online["scope"] == "read"
    assert "offline_access" not in http.get(PRM[1]).json()["scopes_supported"]
    assert "offline_access" in http.get(AS_METADATA[0]).json()["scopes_supported"]
