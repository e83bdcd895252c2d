"""People signing in through a real OpenID Provider (oidc-provider), end to end."""

from __future__ import annotations

import html
import re
import secrets
from urllib.parse import urlencode

import httpx
import pytest

from tests.clients.consent import redirect_params
from tests.clients.mcp_python import (
    HeadlessCallbacks,
    MemoryTokenStorage,
    mcp_session,
    oauth_provider,
    tool_json,
)
from tests.e2e.support import LOOPBACK_REDIRECT, Pkce, authorize_params, code_grant, register
from tests.people.support import PeopleStack, PersonAgent, jwt_claims

pytestmark = pytest.mark.anyio


async def test_admitted_person_end_to_end_with_the_python_sdk(people: PeopleStack) -> None:
    """alice@example.com signs in at the provider, approves the consent page naming her,
    and the SDK's token carries her provider subject; the backend receives her identity
    headers and records the memory she stores as hers."""
    gateway = people.gateway
    agent = PersonAgent(people, "alice")
    callbacks = HeadlessCallbacks(agent)  # type: ignore[arg-type]
    storage = MemoryTokenStorage()
    provider = oauth_provider(f"{gateway.url}/mcp", callbacks, storage, scope="read write")
    content = f"alice's memory {secrets.token_hex(6)}"
    try:
        async with mcp_session(f"{gateway.url}/mcp", provider, gateway.verify) as client:
            stored = tool_json(await client.call_tool("store_memory", {"content": content}))
    finally:
        await agent.aclose()
    assert stored, stored
    assert storage.tokens is not None
    claims = jwt_claims(storage.tokens.access_token)
    assert claims["sub"] == "alice"
    assert claims["email"] == "alice@example.com"
    assert claims["groups"] == ["staff", "memory-admins"]
    consent = next(p for p in agent.pages if "/oauth/authorize/consent" in p.text)
    assert "alice@example.com" in consent.text
    assert "memory-gateway e2e (MCP Python SDK)" in consent.text
    # On the wire to the backend: the person's identity headers.
    wire = people.tap.text().lower()
    assert "x-auth-subject: alice\r\n" in wire
    assert "x-auth-email: alice@example.com\r\n" in wire
    assert "x-auth-name: alice admin\r\n" in wire
    assert "x-auth-groups: staff,memory-admins\r\n" in wire
    # The backend's record of who stored it.
    listed = httpx.get(f"{gateway.backend_url}/api/memories", params={"limit": 100}).json()
    mine = [m for m in listed["memories"] if m["content"] == content]
    assert mine, listed
    assert mine[0]["metadata"]["stored_by_subject"] == "alice"
    assert mine[0]["metadata"]["stored_by"] == storage.client_info.client_id  # type: ignore[union-attr]


def authorize_url(people: PeopleStack, client_id: str, pkce: Pkce, **extra: str) -> str:
    query = urlencode(authorize_params(client_id, pkce, **extra))
    return f"{people.gateway.url}/oauth/authorize?{query}"


def gateway_http(people: PeopleStack) -> httpx.Client:
    return httpx.Client(base_url=people.gateway.url, verify=people.gateway.verify, timeout=15)


async def sign_in_and_grant(
    people: PeopleStack, login: str, scope: str = "read write offline_access"
) -> tuple[PersonAgent, str, dict[str, object]]:
    """A fresh client, a person approving it; (their browser, client_id, token body)."""
    with gateway_http(people) as http:
        client_id = register(http, scope="read write offline_access")
        agent = PersonAgent(people, login)
        pkce = Pkce.new()
        redirect = await agent.authorize(authorize_url(people, client_id, pkce, scope=scope))
        assert "code" in redirect.params, redirect
        answer = code_grant(http, client_id, pkce, redirect.params["code"])
        assert answer.status_code == 200, answer.text
    return agent, client_id, answer.json()


async def test_person_outside_the_allowed_domains_is_refused(people: PeopleStack) -> None:
    """mallory@elsewhere.test: a 403 page saying why, whose link returns access_denied
    (and no code) to the client; nothing is granted."""
    with gateway_http(people) as http:
        client_id = register(http)
    agent = PersonAgent(people, "mallory")
    pkce = Pkce.new()
    url = authorize_url(people, client_id, pkce, scope="read")
    callback = await agent.until_callback(url)
    page = await agent.http.get(callback, headers={"Accept": "text/html"})
    await agent.aclose()
    assert page.status_code == 403, page.text
    assert "mallory@elsewhere.test is not among the allowed addresses" in page.text
    assert "set-cookie" in page.headers
    assert "__Host-mgw-session=" not in page.headers.get("set-cookie", "")
    links = re.findall(r'href="([^"]+)"', page.text)
    back = html.unescape(links[-1])
    params = redirect_params(back)
    assert back.startswith(LOOPBACK_REDIRECT + "?")
    assert params["error"] == "access_denied"
    assert "code" not in params
    assert "does not admit" in params["error_description"]


async def test_unverified_email_does_not_count(people: PeopleStack) -> None:
    """eve@example.com is in an allowed domain, but the provider says the address is
    unverified (email_verified false): refused."""
    with gateway_http(people) as http:
        client_id = register(http)
    agent = PersonAgent(people, "eve")
    callback = await agent.until_callback(authorize_url(people, client_id, Pkce.new()))
    page = await agent.http.get(callback)
    await agent.aclose()
    assert page.status_code == 403
    assert "has not verified the address eve@example.com" in page.text


async def test_allowed_group_admits_a_person_outside_the_domains(people: PeopleStack) -> None:
    agent, _, body = await sign_in_and_grant(people, "carol", scope="read")
    await agent.aclose()
    assert jwt_claims(str(body["access_token"]))["email"] == "carol@partner.test"


async def test_admin_only_for_members_of_the_admin_groups(people: PeopleStack) -> None:
    """A client the operator registered with `admin`: alice (memory-admins) gets admin;
    bob asking for the same gets what he may have, without admin."""
    with gateway_http(people) as http:
        answer = http.post(
            "/oauth/register",
            headers={"Authorization": f"Bearer {people.gateway.api_key}"},
            json={
                "client_name": "admin console",
                "redirect_uris": [LOOPBACK_REDIRECT],
                "token_endpoint_auth_method": "none",
                "scope": "read write admin",
            },
        )
        assert answer.status_code == 201, answer.text
        client_id = answer.json()["client_id"]
        scopes = {}
        for login in ("alice", "bob"):
            agent = PersonAgent(people, login)
            pkce = Pkce.new()
            url = authorize_url(people, client_id, pkce, scope="read admin")
            redirect = await agent.authorize(url)
            await agent.aclose()
            token = code_grant(http, client_id, pkce, redirect.params["code"])
            assert token.status_code == 200, token.text
            scopes[login] = token.json()["scope"]
            bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
            status = http.get("/api/admin/anything", headers=bearer).status_code
            assert (status != 403) is (login == "alice"), (login, status)
    assert scopes == {"alice": "read admin", "bob": "read"}


async def test_consent_deny_returns_access_denied(people: PeopleStack) -> None:
    with gateway_http(people) as http:
        client_id = register(http)
    agent = PersonAgent(people, "bob", decision="deny")
    redirect = await agent.authorize(authorize_url(people, client_id, Pkce.new(), scope="read"))
    await agent.aclose()
    assert redirect.params["error"] == "access_denied"
    assert "code" not in redirect.params


async def test_tampered_and_replayed_callbacks_are_refused(people: PeopleStack) -> None:
    """state: a changed one is unknown, a used one is not accepted twice, and a callback
    carried to another browser fails its binding; code: another sign-in's code (another
    PKCE verifier) is refused by the provider; nothing is granted and nothing 500s."""
    with gateway_http(people) as http:
        client_id = register(http)
    first, second = PersonAgent(people, "bob"), PersonAgent(people, "bob")
    callback = await first.until_callback(authorize_url(people, client_id, Pkce.new()))
    query = redirect_params(callback)
    base = f"{people.gateway.url}/oauth/callback"
    tampered = f"{base}?{urlencode({**query, 'state': query['state'] + 'x'})}"
    assert (await first.http.get(tampered)).status_code == 400
    elsewhere = await second.http.get(callback)
    assert elsewhere.status_code == 400
    assert "started in another browser" in elsewhere.text
    replay = await first.http.get(callback)  # that attempt used the sign-in up
    assert replay.status_code == 400
    assert "unknown, already used or expired" in replay.text
    # A fresh sign-in in the first browser, presented with the second browser's code.
    url = authorize_url(people, client_id, Pkce.new())
    other = redirect_params(await second.until_callback(url))
    mine = redirect_params(await first.until_callback(url))
    swapped = await first.http.get(f"{base}?{urlencode({**mine, 'code': other['code']})}")
    assert swapped.status_code == 502, swapped.text
    assert "refused the code" in swapped.text
    again = await first.http.get(f"{base}?{urlencode(mine)}")
    assert again.status_code == 400
    assert "already used" in again.text
    await first.aclose()
    await second.aclose()


def request_head(wire: str, marker: str) -> str:
    """The request line and headers (as sent upstream) of the request naming `marker`."""
    start = wire.index(marker)
    start = wire.rfind("\r\n\r\n", 0, start) + 4 if "\r\n\r\n" in wire[:start] else 0
    return wire[start : wire.index("\r\n\r\n", start) + 2].lower()


@pytest.mark.parametrize("path_kind", ["fast", "asgi"])
async def test_person_headers_from_clients_are_stripped_on_both_paths(
    people: PeopleStack, path_kind: str
) -> None:
    """A bodyless GET takes the server protocol's fast path, a POST with a body the
    ASGI path: on both, client-sent X-Auth-* (any spelling) are dropped and the
    person's own are sent."""
    agent, _, body = await sign_in_and_grant(people, "bob", scope="read write")
    await agent.aclose()
    marker = f"probe-{path_kind}-{secrets.token_hex(6)}"
    headers = {
        "Authorization": f"Bearer {body['access_token']}",
        "X-Auth-Email": "spoofed-ceo@example.com",
        "X_Auth_Groups": "spoofed-admins",
        "x.auth.name": "spoofed CEO",
        "X-Auth-Subject": "spoofed-ceo",
    }
    with gateway_http(people) as http:
        if path_kind == "fast":
            answer = http.get(f"/api/memories?{marker}=1", headers=headers)
        else:
            answer = http.post(
                f"/api/memories?{marker}=1", headers=headers, json={"content": marker}
            )
        assert answer.status_code == 200, answer.text
    head = request_head(people.tap.text(), marker)
    assert "spoofed" not in head
    assert "x-auth-email: bob@example.com\r\n" in head
    assert "x-auth-groups: staff\r\n" in head
    assert "x-auth-name: bob builder\r\n" in head
    assert "x-auth-subject: bob\r\n" in head
