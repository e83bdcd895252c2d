"""Browser sessions, sign-out, remembered consent and connected apps."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import httpx
import pytest

from tests.e2e.support import Pkce
from tests.people.support import PeopleStack, PersonAgent
from tests.people.test_sign_in import authorize_url, gateway_http, sign_in_and_grant

pytestmark = pytest.mark.anyio


def session_cookie_header(agent: PersonAgent) -> str:
    """The Set-Cookie that started the agent's session (on the callback's answer)."""
    for page in agent.pages:
        for value in page.headers.get_list("set-cookie"):
            if value.startswith("__Host-mgw-session="):
                return value
    raise AssertionError("no session cookie was set")


def session_value(agent: PersonAgent) -> str:
    return session_cookie_header(agent).split(";", 1)[0].split("=", 1)[1]


async def test_session_cookie_flags_browser_routes_and_logout(people: PeopleStack) -> None:
    agent, _, _ = await sign_in_and_grant(people, "bob", scope="read")
    set_cookie = session_cookie_header(agent)
    attributes = {part.strip().split("=")[0].lower() for part in set_cookie.split(";")[1:]}
    assert {"path", "max-age", "secure", "httponly", "samesite"} <= attributes
    assert "; Path=/;" in set_cookie
    assert "SameSite=Lax" in set_cookie
    assert "domain" not in attributes
    cookie = {"Cookie": f"__Host-mgw-session={session_value(agent)}; theme=dark"}
    gateway = people.gateway
    with httpx.Client(base_url=gateway.url, verify=gateway.verify, timeout=15) as http:
        # A browser route (policy `browser: true`) is authorised by the session ...
        listed = http.get("/api/memories", headers=cookie)
        assert listed.status_code == 200, listed.text
        # ... an unsafe method needs the gateway's own Origin ...
        body = {"content": "written from the dashboard"}
        assert http.post("/api/memories", headers=cookie, json=body).status_code == 403
        foreign = {**cookie, "Origin": "https://evil.example"}
        assert http.post("/api/memories", headers=foreign, json=body).status_code == 403
        same = {**cookie, "Origin": gateway.url}
        stored = http.post("/api/memories", headers=same, json=body)
        assert stored.status_code == 200, stored.text
        # ... and the MCP endpoint never takes a cookie.
        assert http.post("/mcp", headers=cookie, json={}).status_code == 401
        # The cookie is a credential: it never reaches the backend; other cookies do.
        wire = people.tap.text()
        assert "theme=dark" in wire
        assert "__Host-mgw-session" not in wire
        # Sign out: a form with a CSRF token, then the cookie is cleared and dead.
        form = http.get("/oauth/logout", headers=cookie)
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None, form.text
        refused = http.post("/oauth/logout", headers=cookie, data={"csrf": "forged"})
        assert refused.status_code == 400
        cross = http.post("/oauth/logout", headers=foreign, data={"csrf": csrf.group(1)})
        assert cross.status_code == 400
        assert "set-cookie" not in cross.headers
        assert http.get("/api/memories", headers=cookie).status_code == 200
        out = http.post("/oauth/logout", headers=same, data={"csrf": csrf.group(1)})
        assert out.status_code == 200
        assert "Max-Age=0" in out.headers["set-cookie"]
        assert out.headers["set-cookie"].startswith("__Host-mgw-session=;")
        assert http.get("/api/memories", headers=cookie).status_code == 401
    await agent.aclose()


async def test_session_skips_the_provider_and_approval_is_remembered(
    people: PeopleStack,
) -> None:
    """A second authorization of the same client and scopes in the same browser: no
    provider round trip (session) and no consent page (remembered approval)."""
    agent, client_id, _ = await sign_in_and_grant(people, "bob", scope="read")
    seen = len(agent.pages)
    redirect = await agent.authorize(authorize_url(people, client_id, Pkce.new(), scope="read"))
    assert "code" in redirect.params
    later = agent.pages[seen:]
    assert all(people.provider.issuer not in str(p.url) for p in later)
    assert all("/oauth/authorize/consent" not in p.text for p in later)
    # More scopes than approved: the consent page again.
    url = authorize_url(people, client_id, Pkce.new(), scope="read write")
    seen = len(agent.pages)
    await agent.authorize(url)
    assert any("/oauth/authorize/consent" in p.text for p in agent.pages[seen:])
    await agent.aclose()


async def test_connected_apps_revocation_takes_effect_on_the_next_request(
    people: PeopleStack,
) -> None:
    agent, client_id, body = await sign_in_and_grant(people, "bob")
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    gateway = people.gateway
    with gateway_http(people) as http:
        assert http.get("/api/memories", headers=bearer).status_code == 200
        apps = await agent.http.get(f"{gateway.url}/oauth/apps")
        assert apps.status_code == 200, apps.text
        assert client_id in apps.text
        assert "e2e raw client" in apps.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', apps.text)
        assert csrf is not None
        revoked = await agent.http.post(
            f"{gateway.url}/oauth/apps/revoke",
            data={"client_id": client_id, "csrf": csrf.group(1)},
            headers={"Origin": gateway.url},
        )
        assert revoked.status_code == 303
        # The very next proxied request with the app's access token fails ...
        answer = http.get("/api/memories", headers=bearer)
        assert answer.status_code == 401
        assert 'error="invalid_token"' in answer.headers["www-authenticate"]
        # ... and so does its refresh token.
        refreshed = http.post(
            "/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": body["refresh_token"],
                "client_id": client_id,
            },
        )
        assert refreshed.status_code == 400
        assert refreshed.json()["error"] == "invalid_grant"
        after = await agent.http.get(f"{gateway.url}/oauth/apps")
        assert client_id not in after.text
    await agent.aclose()


async def test_apps_page_needs_a_session(people: PeopleStack) -> None:
    gateway = people.gateway
    with gateway_http(people) as http:
        answer = http.get("/oauth/apps")
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/oauth/login?")
        forged = http.post("/oauth/apps/revoke", data={"client_id": "x", "csrf": "y"})
        assert forged.status_code == 400
    agent = PersonAgent(people, "bob")
    callback = await agent.until_callback(f"{gateway.url}/oauth/login?return_to=/oauth/apps")
    landed = await agent.http.get(callback)
    assert landed.status_code == 303
    assert landed.headers["location"] == "/oauth/apps"
    assert (await agent.http.get(f"{gateway.url}/oauth/apps")).status_code == 200
    await agent.aclose()


async def test_operator_revokes_a_persons_app_from_the_cli(people: PeopleStack) -> None:
    agent, client_id, body = await sign_in_and_grant(people, "carol", scope="read")
    await agent.aclose()
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    env = {**os.environ, "MCP_GATEWAY_STATE_DIR": str(people.gateway.state_dir)}
    cli = [sys.executable, "-m", "gateway", "people"]
    listed = subprocess.run(
        [*cli, "apps", "--subject", "carol"], env=env, capture_output=True, text=True, timeout=30
    )
    assert listed.returncode == 0, listed.stderr
    assert client_id in listed.stdout
    with gateway_http(people) as http:
        assert http.get("/api/memories", headers=bearer).status_code == 200
        done = subprocess.run(
            [*cli, "revoke", "carol", client_id],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        # Another process wrote it: the gateway reads revocations every 2 s.
        deadline = time.monotonic() + 10
        status = 200
        while time.monotonic() < deadline and status == 200:
            status = http.get("/api/memories", headers=bearer).status_code
            time.sleep(0.2)
        assert status == 401
    again = subprocess.run(
        [*cli, "revoke", "carol", client_id], env=env, capture_output=True, text=True, timeout=30
    )
    assert again.returncode == 1
