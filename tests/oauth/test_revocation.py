"""Revocation (RFC 7009), introspection (RFC 7662) and the hot-path cache (PROTOCOL T7)."""

from __future__ import annotations

import pytest

from gateway.oauth.revocation import RevocationCache
from gateway.oauth.tokens import AccessToken
from gateway.store.base import Revocation
from gateway.store.memory import MemoryStore
from tests.oauth.conftest import API_KEY, ISSUER, Harness, basic
from tests.oauth.test_token import offline_tokens, refresh_form

pytestmark = pytest.mark.anyio
RESOURCE = f"{ISSUER}/mcp"


async def test_t7_unknown_token_revocation_is_200(harness: Harness) -> None:
    client = await harness.public_client()
    response = await harness.http.post(
        "/oauth/revoke", data={"token": "nope", "client_id": client["client_id"]}
    )
    assert response.status_code == 200


async def test_t7_revoke_requires_token_and_client(harness: Harness) -> None:
    client = await harness.public_client()
    missing = await harness.http.post("/oauth/revoke", data={"client_id": client["client_id"]})
    assert missing.json()["error"] == "invalid_request"
    anonymous = await harness.http.post("/oauth/revoke", data={"token": "x"})
    assert anonymous.status_code == 401


async def test_t7_revoking_refresh_token_revokes_family_access_tokens(harness: Harness) -> None:
    client, tokens = await offline_tokens(harness)
    cid = client["client_id"]
    response = await harness.http.post(
        "/oauth/revoke", data={"token": tokens["refresh_token"], "client_id": cid}
    )
    assert response.status_code == 200
    access = harness.tokens.verify(tokens["access_token"], audience=RESOURCE)
    assert harness.server.revocations.is_revoked(access)
    again = await harness.http.post("/oauth/token", data=refresh_form(cid, tokens["refresh_token"]))
    assert again.json()["error"] == "invalid_grant"


async def test_t7_revoking_access_token_revokes_its_jti_only(harness: Harness) -> None:
    client, tokens = await offline_tokens(harness)
    cid = client["client_id"]
    await harness.http.post(
        "/oauth/revoke", data={"token": tokens["access_token"], "client_id": cid}
    )
    access = harness.tokens.verify(tokens["access_token"], audience=RESOURCE)
    assert harness.server.revocations.is_revoked(access)
    refreshed = await harness.http.post(
        "/oauth/token", data=refresh_form(cid, tokens["refresh_token"])
    )
    assert refreshed.status_code == 200
    new_access = harness.tokens.verify(refreshed.json()["access_token"], audience=RESOURCE)
    assert not harness.server.revocations.is_revoked(new_access)


async def test_t7_another_clients_token_is_not_revoked(harness: Harness) -> None:
    _, tokens = await offline_tokens(harness)
    other = await harness.public_client()
    response = await harness.http.post(
        "/oauth/revoke", data={"token": tokens["access_token"], "client_id": other["client_id"]}
    )
    assert response.status_code == 200
    access = harness.tokens.verify(tokens["access_token"], audience=RESOURCE)
    assert not harness.server.revocations.is_revoked(access)


async def test_t7_introspection_needs_authentication(harness: Harness) -> None:
    _, tokens = await offline_tokens(harness)
    public = await harness.public_client()
    anonymous = await harness.http.post("/oauth/introspect", data={"token": tokens["access_token"]})
    assert anonymous.status_code == 401
    by_public = await harness.http.post(
        "/oauth/introspect",
        data={"token": tokens["access_token"], "client_id": public["client_id"]},
    )
    assert by_public.status_code == 401
    wrong_key = await harness.http.post(
        "/oauth/introspect", data={"token": "x"}, headers={"Authorization": "Bearer wrong"}
    )
    assert wrong_key.status_code == 401


async def test_t7_introspection_active_then_exactly_inactive(harness: Harness) -> None:
    client, tokens = await offline_tokens(harness)
    key = {"Authorization": f"Bearer {API_KEY}"}
    active = await harness.http.post(
        "/oauth/introspect", data={"token": tokens["access_token"]}, headers=key
    )
    body = active.json()
    assert body["active"] is True
    assert body["client_id"] == client["client_id"]
    assert body["aud"] == RESOURCE
    assert body["iss"] == ISSUER
    refresh = await harness.http.post(
        "/oauth/introspect", data={"token": tokens["refresh_token"]}, headers=key
    )
    assert refresh.json()["active"] is True
    await harness.http.post(
        "/oauth/revoke", data={"token": tokens["refresh_token"], "client_id": client["client_id"]}
    )
    for token in (tokens["access_token"], tokens["refresh_token"], "garbage", "a.b.c"):
        gone = await harness.http.post("/oauth/introspect", data={"token": token}, headers=key)
        assert gone.json() == {"active": False}


async def test_t7_operator_registered_client_may_introspect(harness: Harness) -> None:
    _, tokens = await offline_tokens(harness)
    rs = await harness.register_as_operator(client_name="resource server")
    response = await harness.http.post(
        "/oauth/introspect",
        data={"token": tokens["access_token"]},
        headers=basic(rs["client_id"], rs["client_secret"]),
    )
    assert response.json()["active"] is True


def token(jti: str, family: str | None = None) -> AccessToken:
    return AccessToken("user", "c", frozenset({"read"}), RESOURCE, 0, 100, jti, family)


async def test_revocation_cache_picks_up_other_replicas_and_prunes() -> None:
    now = [10.0]
    store = MemoryStore()
    cache = RevocationCache(store, clock=lambda: now[0])
    await store.add_revocation(Revocation("jti", "j1", 50))  # written by another replica
    await store.add_revocation(Revocation("family", "f1", 200))
    assert not cache.is_revoked(token("j1"))
    await cache.refresh()
    assert cache.is_revoked(token("j1"))
    assert cache.is_revoked(token("other", family="f1"))
    assert not cache.is_revoked(token("other", family="f2"))
    now[0] = 100.0
    await cache.refresh()
    assert not cache.is_revoked(token("j1"))  # expired entries are pruned
    assert cache.is_revoked(token("x", family="f1"))
