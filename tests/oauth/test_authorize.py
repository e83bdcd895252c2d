"""The authorization endpoint and consent through the real app (PROTOCOL A1-A7)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.oauth.conftest import API_KEY, ISSUER, LOOPBACK_CB, Harness, pkce, query_of

pytestmark = pytest.mark.anyio
CHALLENGE = pkce("v" * 50)


@pytest.mark.parametrize(
    ("client_id", "redirect_uri"),
    [
        (None, LOOPBACK_CB),
        ("unknown-client", LOOPBACK_CB),
        ("KNOWN", "https://attacker.example/cb"),
        ("KNOWN", "http://127.0.0.1:3000/other"),
    ],
)
async def test_a1_bad_client_or_redirect_gets_400_page_never_redirect(
    harness: Harness, client_id: str | None, redirect_uri: str
) -> None:
    client = await harness.public_client()
    params = {
        "response_type": "code",
        "redirect_uri": redirect_uri,
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
    }
    if client_id is not None:
        params["client_id"] = client["client_id"] if client_id == "KNOWN" else client_id
    response = await harness.http.get("/oauth/authorize", params=params)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert response.json()["error"] == "invalid_request"
    html = await harness.http.get(
        "/oauth/authorize", params=params, headers={"Accept": "text/html"}
    )
    assert html.status_code == 400
    assert html.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),
        ({"scope": "read superuser"}, "invalid_scope"),
        ({"resource": "https://other.example/mcp"}, "invalid_target"),
    ],
)
async def test_a1_other_errors_redirect_with_error_state_and_iss(
    harness: Harness, params: dict[str, str | None], error: str
) -> None:
    client = await harness.public_client()
    query = {
        "response_type": "code",
        "client_id": client["client_id"],
        "redirect_uri": LOOPBACK_CB,
        "state": "s1",
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
        **params,
    }
    response = await harness.http.get(
        "/oauth/authorize", params={k: v for k, v in query.items() if v is not None}
    )
    assert response.status_code == 302
    assert response.headers["location"].startswith(LOOPBACK_CB + "?")
    got = query_of(response)
    assert (got["error"], got["state"], got["iss"]) == (error, "s1", ISSUER)
    assert "code" not in got


async def test_unsupported_response_type_does_not_make_the_gateway_a_redirector(
    harness: Harness,
) -> None:
    """Issue 9: anyone can self-register https://evil.example/cb; until the client has
    completed a flow its errors are shown on the gateway's own page, not redirected."""
    client = await harness.register(
        client_name="Evil", redirect_uris=["https://evil.example/cb"],
        token_endpoint_auth_method="none",
    )  # fmt: skip
    query = {
        "response_type": "token",
        "client_id": client["client_id"],
        "redirect_uri": "https://evil.example/cb",
        "state": "s1",
    }
    response = await harness.http.get("/oauth/authorize", params=query)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert response.json()["error"] == "unsupported_response_type"
    page = await harness.http.get("/oauth/authorize", params=query, headers={"Accept": "text/html"})
    assert page.status_code == 400
    assert "evil.example" not in page.headers.get("location", "")
    # Once it has completed a flow, its redirect URI has proved itself: errors go there.
    code, verifier = await harness.code_for(
        client["client_id"], redirect_uri="https://evil.example/cb"
    )
    exchanged = await harness.exchange(
        client["client_id"], code, verifier, redirect_uri="https://evil.example/cb"
    )
    assert exchanged.status_code == 200
    again = await harness.http.get("/oauth/authorize", params=query)
    assert again.status_code == 302
    assert query_of(again)["error"] == "unsupported_response_type"


async def test_pkce_is_required_for_confidential_clients_too(harness: Harness) -> None:
    client = await harness.register(
        client_name="Confidential", redirect_uris=["https://c.example/cb"]
    )
    assert client["token_endpoint_auth_method"] != "none"
    query = {
        "response_type": "code",
        "client_id": client["client_id"],
        "redirect_uri": "https://c.example/cb",
        "state": "s1",
    }
    response = await harness.http.get("/oauth/authorize", params=query)
    assert response.status_code == 400  # not yet proven: the gateway's page
    assert response.json()["error"] == "invalid_request"
    assert "code_challenge" in response.json()["error_description"]


async def test_a1_client_without_authorization_code_grant_is_unauthorized_client(
    harness: Harness,
) -> None:
    client = await harness.register_as_operator(
        redirect_uris=["https://m.example/cb"],
        grant_types=["client_credentials"],
        response_types=[],
    )
    response = await harness.authorize(client["client_id"], redirect_uri="https://m.example/cb")
    assert query_of(response)["error"] == "unauthorized_client"


async def test_a2_loopback_redirect_any_port_and_code_with_iss(harness: Harness) -> None:
    client = await harness.public_client()
    response = await harness.authorize(
        client["client_id"],
        redirect_uri="http://127.0.0.1:54321/callback",
        code_challenge=CHALLENGE,
        code_challenge_method="S256",
    )
    assert response.status_code == 302
    assert response.headers["location"].startswith("http://127.0.0.1:54321/callback?")
    got = query_of(response)
    assert got["state"] == "st4te"
    assert got["iss"] == ISSUER
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", got["code"])  # 256 bits, URL-safe


async def test_a6_api_key_consent_page_names_client_host_and_scopes(make_harness: Any) -> None:
    h = await make_harness(consent="api_key")
    client = await h.public_client(scope="read write")
    page = await h.authorize(
        client["client_id"],
        redirect_uri=LOOPBACK_CB,
        code_challenge=CHALLENGE,
        code_challenge_method="S256",
        scope="read",
    )
    assert page.status_code == 200
    assert "Claude Code" in page.text
    assert "127.0.0.1:3000" in page.text
    assert "read" in page.text
    assert page.headers["x-frame-options"] == "DENY"
    consent_id = re.search(r'name="consent_id" value="([^"]+)"', page.text)
    assert consent_id is not None
    form = {"consent_id": consent_id.group(1), "decision": "approve"}
    wrong = await h.http.post("/oauth/authorize/consent", data={**form, "api_key": "nope"})
    assert wrong.status_code == 401
    assert "Wrong API key" in wrong.text
    # the first form is used up: replaying it (CSRF, double submit) approves nothing
    replay = await h.http.post("/oauth/authorize/consent", data={**form, "api_key": API_KEY})
    assert replay.status_code == 400
    fresh = re.search(r'name="consent_id" value="([^"]+)"', wrong.text)
    assert fresh is not None
    ok = await h.http.post(
        "/oauth/authorize/consent",
        data={"consent_id": fresh.group(1), "decision": "approve", "api_key": API_KEY},
    )
    assert ok.status_code == 302
    got = query_of(ok)
    assert got["code"]
    assert got["state"] == "st4te"
    assert got["iss"] == ISSUER


async def test_a6_deny_redirects_with_access_denied(make_harness: Any) -> None:
    h = await make_harness(consent="api_key")
    client = await h.public_client()
    page = await h.authorize(
        client["client_id"],
        redirect_uri=LOOPBACK_CB,
        code_challenge=CHALLENGE,
        code_challenge_method="S256",
    )
    consent_id = re.search(r'name="consent_id" value="([^"]+)"', page.text)
    assert consent_id is not None
    denied = await h.http.post(
        "/oauth/authorize/consent", data={"consent_id": consent_id.group(1), "decision": "deny"}
    )
    got = query_of(denied)
    assert (got["error"], got["state"], got["iss"]) == ("access_denied", "st4te", ISSUER)


async def test_a6_consent_page_escapes_client_name(make_harness: Any) -> None:
    h = await make_harness(consent="api_key")
    client = await h.register(
        client_name="<script>x</script>",
        redirect_uris=[LOOPBACK_CB],
        token_endpoint_auth_method="none",
    )
    page = await h.authorize(
        client["client_id"],
        redirect_uri=LOOPBACK_CB,
        code_challenge=CHALLENGE,
        code_challenge_method="S256",
    )
    assert "<script>x" not in page.text
    assert "&lt;script&gt;" in page.text


async def test_a6_auto_consent_warns_when_issuer_not_loopback(
    make_harness: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await make_harness()
    assert any("MCP_OAUTH_CONSENT=auto" in r.message for r in caplog.records)


async def test_a5_no_scope_requested_gets_registered_scope(harness: Harness) -> None:
    client = await harness.public_client(scope="read")
    code, verifier = await harness.code_for(client["client_id"])
    token = await harness.exchange(client["client_id"], code, verifier)
    assert token.json()["scope"] == "read"


async def test_d6_step_up_may_ask_for_more_than_the_registered_scope(harness: Harness) -> None:
    """MCP SDKs register with the first challenge's scope ('read') and, on a 403
    insufficient_scope, authorize again for 'read write': consent, not the
    registration, limits a delegated grant."""
    client = await harness.public_client(scope="read")
    code, verifier = await harness.code_for(client["client_id"], scope="read write")
    token = await harness.exchange(client["client_id"], code, verifier)
    assert token.json()["scope"] == "read write"


async def test_a_rate_limit_on_authorize(make_harness: Any) -> None:
    h = await make_harness(rate_limit_per_minute=2)
    client = await h.public_client()
    statuses = [(await h.authorize(client["client_id"])).status_code for _ in range(3)]
    assert statuses[-1] == 429
