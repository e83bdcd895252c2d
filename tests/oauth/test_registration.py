"""Dynamic client registration through the real app (PROTOCOL R1-R5, RFC 7592)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.oauth.conftest import API_KEY, ISSUER, LOOPBACK_CB, Harness, basic

pytestmark = pytest.mark.anyio


async def test_r1_seed_debug_call_registers_a_client_that_cannot_get_a_token_alone(
    harness: Harness,
) -> None:
    """Documented choice (security review #1): an open registration without
    redirect_uris answers 201 with grant_types [] and a secret, and no token can be
    obtained with it: client_credentials skips consent, so it is for operator-registered
    clients only. An RFC 7592 update adding redirect_uris makes it a consent-based
    client; it never gains client_credentials."""
    response = await harness.http.post(
        "/oauth/register",
        content=b'{"client_name": "Test Client"}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["client_name"] == "Test Client"
    assert body["grant_types"] == []
    assert body["response_types"] == []
    assert body["token_endpoint_auth_method"] == "client_secret_basic"
    assert body["client_secret"]
    assert body["client_secret_expires_at"] == 0
    assert isinstance(body["client_id_issued_at"], int)
    credentials = basic(body["client_id"], body["client_secret"])
    for form in (
        {"grant_type": "client_credentials"},
        {"grant_type": "client_credentials", "scope": "admin"},
        {"grant_type": "refresh_token", "refresh_token": "x"},
    ):
        token = await harness.http.post("/oauth/token", data=form, headers=credentials)
        assert token.status_code == 400
        assert token.json()["error"] == "unauthorized_client"
    authorize = await harness.authorize(body["client_id"])
    assert authorize.status_code == 400
    auth = {"Authorization": f"Bearer {body['registration_access_token']}"}
    widened = {**body, "grant_types": ["client_credentials"]}
    put = await harness.http.put(body["registration_client_uri"], json=widened, headers=auth)
    assert put.json()["error"] == "invalid_client_metadata"
    completed = {"client_id": body["client_id"], "redirect_uris": ["https://t.example/cb"]}
    put = await harness.http.put(body["registration_client_uri"], json=completed, headers=auth)
    assert put.status_code == 200
    assert put.json()["grant_types"] == ["authorization_code", "refresh_token"]
    token = await harness.http.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, headers=credentials
    )
    assert token.json()["error"] == "unauthorized_client"


@pytest.mark.parametrize("credential", [API_KEY, "initial-access-token"])
async def test_r1_operator_registration_may_use_client_credentials_and_admin(
    make_harness: Any, credential: str
) -> None:
    """MCP_API_KEY or the initial access token as Bearer: operators provision machine
    clients this way (T6)."""
    h = await make_harness(dcr_registration_key="initial-access-token")
    response = await h.http.post(
        "/oauth/register",
        json={"client_name": "backup job", "scope": "read write admin"},
        headers={"Authorization": f"Bearer {credential}"},
    )
    assert response.status_code == 201
    body = response.json()
    assert body["grant_types"] == ["client_credentials"]
    assert body["scope"] == "read write admin"
    token = await h.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "admin"},
        headers=basic(body["client_id"], body["client_secret"]),
    )
    assert token.status_code == 200
    assert token.json()["scope"] == "admin"


@pytest.mark.parametrize(
    ("metadata", "error"),
    [
        ({"grant_types": ["client_credentials"]}, "invalid_client_metadata"),
        (
            {
                "redirect_uris": [LOOPBACK_CB],
                "grant_types": ["authorization_code", "client_credentials"],
                "response_types": ["code"],
            },
            "invalid_client_metadata",
        ),
        ({"scope": "admin"}, "invalid_client_metadata"),
    ],
)
async def test_r1_open_registration_refuses_client_credentials_and_admin(
    harness: Harness, metadata: dict[str, Any], error: str
) -> None:
    response = await harness.http.post("/oauth/register", json=metadata)
    assert response.status_code == 400
    assert response.json()["error"] == error


async def test_r1_a5_open_registration_drops_admin_from_its_scope(harness: Harness) -> None:
    """RFC 7591 §3.2.1: the server may replace a requested value; the response says so."""
    body = await harness.public_client(scope="read write admin")
    assert body["scope"] == "read write"


async def test_r1_public_client_gets_no_secret_and_metadata_is_echoed(harness: Harness) -> None:
    body = await harness.register(
        client_name="Claude Code",
        redirect_uris=[LOOPBACK_CB],
        token_endpoint_auth_method="none",
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        scope="read write",
        client_uri="https://claude.ai",
        software_id="claude-code",
        unknown_field={"ignored": True},
    )
    assert "client_secret" not in body
    assert "client_secret_expires_at" not in body
    assert body["redirect_uris"] == [LOOPBACK_CB]
    assert body["scope"] == "read write"
    assert body["client_uri"] == "https://claude.ai"
    assert body["software_id"] == "claude-code"
    assert "unknown_field" not in body
    assert None not in body.values()


@pytest.mark.parametrize(
    ("metadata", "error"),
    [
        ({"redirect_uris": ["http://evil.example/cb"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["https://a.example/cb#x"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["javascript:alert(1)"]}, "invalid_redirect_uri"),
        ({"redirect_uris": "https://a.example/cb"}, "invalid_redirect_uri"),
        ({"grant_types": ["authorization_code"]}, "invalid_redirect_uri"),
        ({"token_endpoint_auth_method": "private_key_jwt"}, "invalid_client_metadata"),
        ({"redirect_uris": [LOOPBACK_CB], "grant_types": ["implicit"]}, "invalid_client_metadata"),
        ({"redirect_uris": [LOOPBACK_CB], "response_types": ["token"]}, "invalid_client_metadata"),
        ({"redirect_uris": [LOOPBACK_CB], "scope": "read root"}, "invalid_client_metadata"),
        (
            {"token_endpoint_auth_method": "none", "grant_types": ["client_credentials"]},
            "invalid_client_metadata",
        ),
        ({"client_name": 42}, "invalid_client_metadata"),
    ],
)
async def test_r2_r3_bad_metadata_is_400_with_rfc7591_error(
    harness: Harness, metadata: dict[str, Any], error: str
) -> None:
    response = await harness.http.post("/oauth/register", json=metadata)
    assert response.status_code == 400
    assert response.json()["error"] == error


async def test_r2_non_json_body_is_invalid_client_metadata(harness: Harness) -> None:
    response = await harness.http.post(
        "/oauth/register", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client_metadata"


async def test_r3_private_use_scheme_allowed_by_operator(make_harness: Any) -> None:
    h = await make_harness(allowed_redirect_schemes=("cursor",))
    assert (await h.register(redirect_uris=["cursor://anysphere.cursor-mcp/cb"]))["redirect_uris"]
    closed = await make_harness()
    response = await closed.http.post("/oauth/register", json={"redirect_uris": ["cursor://x/cb"]})
    assert response.json()["error"] == "invalid_redirect_uri"


async def test_r4_rfc7592_read_update_delete_with_registration_token(harness: Harness) -> None:
    body = await harness.register(client_name="A", redirect_uris=["https://a.example/cb"])
    uri = body["registration_client_uri"]
    assert uri == f"{ISSUER}/oauth/register/{body['client_id']}"
    auth = {"Authorization": f"Bearer {body['registration_access_token']}"}
    read = await harness.http.get(uri, headers=auth)
    assert read.status_code == 200
    assert read.json()["client_name"] == "A"
    assert "client_secret" not in read.json()
    update = {**read.json(), "client_name": "B", "redirect_uris": ["https://b.example/cb"]}
    put = await harness.http.put(uri, json=update, headers=auth)
    assert put.status_code == 200
    assert put.json()["redirect_uris"] == ["https://b.example/cb"]
    # the secret issued at registration still authenticates after the update
    cc = await harness.http.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": "x"},
        headers=basic(body["client_id"], body["client_secret"]),
    )
    assert cc.json()["error"] == "invalid_grant"
    assert (
        await harness.http.get(uri, headers={"Authorization": "Bearer wrong"})
    ).status_code == 401
    deleted = await harness.http.delete(uri, headers=auth)
    assert deleted.status_code == 204
    assert (await harness.http.get(uri, headers=auth)).status_code == 401


async def test_r4_seed_client_info_endpoint_redacts_secret_and_needs_auth(harness: Harness) -> None:
    body = await harness.register(client_name="Test Client")
    path = f"/oauth/clients/{body['client_id']}"
    anonymous = await harness.http.get(path)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    for token in (API_KEY, body["registration_access_token"]):
        info = await harness.http.get(path, headers={"Authorization": f"Bearer {token}"})
        assert info.status_code == 200
        assert info.json()["client_name"] == "Test Client"
        assert body["client_secret"] not in info.text
        assert info.json()["has_client_secret"] is True
    missing = await harness.http.get(
        "/oauth/clients/nope", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert missing.status_code == 404


async def test_r5_registration_closed_by_initial_access_token(make_harness: Any) -> None:
    h = await make_harness(dcr_registration_key="initial-access-token")
    refused = await h.http.post("/oauth/register", json={"client_name": "x"})
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_token"
    wrong = await h.http.post(
        "/oauth/register", json={"client_name": "x"}, headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401
    ok = await h.http.post(
        "/oauth/register",
        json={"client_name": "x"},
        headers={"Authorization": "Bearer initial-access-token"},
    )
    assert ok.status_code == 201


async def test_r5_registration_rate_limited_per_address(make_harness: Any) -> None:
    h = await make_harness(rate_limit_per_minute=3)
    codes = [
        (await h.http.post("/oauth/register", json={"client_name": "x"})).status_code
        for _ in range(4)
    ]
    assert codes == [201, 201, 201, 429]
    last = await h.http.post("/oauth/register", json={"client_name": "x"})
    assert int(last.headers["retry-after"]) >= 1
    h.clock.now += 61
    assert (await h.http.post("/oauth/register", json={"client_name": "x"})).status_code == 201


async def test_r5_full_registry_evicts_least_recently_used_open_client_never_operator_ones(
    make_harness: Any,
) -> None:
    """Security review #6: a full registry no longer answers 503 forever; the open
    client used least recently goes (not simply the oldest), operator ones stay."""
    h = await make_harness(max_clients=3)
    operator = await h.register_as_operator(client_name="operator")
    first = await h.public_client()
    h.clock.now += 10
    second = await h.public_client()
    h.clock.now += 10
    code, verifier = await h.code_for(first["client_id"])
    assert (await h.exchange(first["client_id"], code, verifier)).status_code == 200
    h.clock.now += 10
    third = await h.http.post("/oauth/register", json={"client_name": "third"})
    assert third.status_code == 201
    key = {"Authorization": f"Bearer {API_KEY}"}

    async def exists(client: dict[str, Any]) -> bool:
        info = await h.http.get(f"/oauth/clients/{client['client_id']}", headers=key)
        return bool(info.status_code == 200)

    assert not await exists(second)
    assert await exists(first)
    assert await exists(operator)
    for _ in range(3):
        assert (await h.http.post("/oauth/register", json={"client_name": "x"})).status_code == 201
    assert await exists(operator)


async def test_r5_registration_flood_never_evicts_a_client_in_use(make_harness: Any) -> None:
    """Issue 9: anonymous registrations push out only never-used registrations; with
    the registry full of clients in use they are refused, the clients keep working."""
    h = await make_harness(max_clients=2)
    users = [await h.public_client(), await h.public_client()]
    for user in users:
        code, verifier = await h.code_for(user["client_id"])
        assert (await h.exchange(user["client_id"], code, verifier)).status_code == 200
    for _ in range(5):
        flood = await h.http.post("/oauth/register", json={"client_name": "flood"})
        assert flood.status_code == 503
        assert flood.json()["error"] == "temporarily_unavailable"
        assert "in use" in flood.json()["error_description"]
        assert "retry-after" in flood.headers
    key = {"Authorization": f"Bearer {API_KEY}"}
    for user in users:
        info = await h.http.get(f"/oauth/clients/{user['client_id']}", headers=key)
        assert info.status_code == 200
    # An operator registration still takes the least recently used one's place.
    assert (await h.register_as_operator(client_name="operator"))["client_id"]


async def test_r5_registry_full_of_operator_clients_is_503(make_harness: Any) -> None:
    h = await make_harness(max_clients=2)
    await h.register_as_operator(client_name="a")
    await h.register_as_operator(client_name="b")
    full = await h.http.post("/oauth/register", json={"client_name": "c"})
    assert full.status_code == 503
    assert full.json()["error"] == "temporarily_unavailable"


async def test_r5_stale_unused_open_clients_make_room_first(make_harness: Any) -> None:
    h = await make_harness(max_clients=2)
    operator = await h.register_as_operator(client_name="never used, kept")
    await h.register(client_name="never used")
    h.clock.now += 2 * 3600
    assert (await h.http.post("/oauth/register", json={"client_name": "new"})).status_code == 201
    info = await h.http.get(
        f"/oauth/clients/{operator['client_id']}", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert info.status_code == 200


async def test_413_oversized_registration_body(make_harness: Any) -> None:
    h = await make_harness(max_form_bytes=1024)
    response = await h.http.post("/oauth/register", json={"client_name": "x" * 5000})
    assert response.status_code == 413
    assert response.json()["error"] == "invalid_request"
