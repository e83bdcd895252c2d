"""Discovery documents through the real app (PROTOCOL D1-D4, D8)."""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from gateway.authserver import is_authorization_path
from tests.oauth.conftest import ISSUER, Harness

pytestmark = pytest.mark.anyio

AS_PATHS = [
    "/.well-known/oauth-authorization-server",
    "/.well-known/oauth-authorization-server/mcp",
    "/.well-known/openid-configuration",
    "/.well-known/openid-configuration/mcp",
]


def no_nulls(value: Any) -> bool:
    if isinstance(value, dict):
        return all(v is not None and no_nulls(v) for v in value.values())
    if isinstance(value, list):
        return all(v is not None and no_nulls(v) for v in value)
    return True


@pytest.mark.parametrize("path", AS_PATHS)
async def test_d2_d3_as_metadata_served_at_every_alias_without_nulls(
    harness: Harness, path: str
) -> None:
    response = await harness.http.get(path)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    doc = response.json()
    assert doc["issuer"] == ISSUER
    assert doc["response_types_supported"] == ["code"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert "none" in doc["token_endpoint_auth_methods_supported"]
    assert doc["authorization_response_iss_parameter_supported"] is True
    for name in (
        "registration_endpoint",
        "revocation_endpoint",
        "introspection_endpoint",
        "jwks_uri",
    ):
        assert doc[name].startswith(ISSUER + "/")
    assert set(doc["scopes_supported"]) == {"read", "write", "admin", "offline_access"}
    assert "client_id_metadata_document_supported" not in doc
    assert no_nulls(doc)
    if "openid" in path:
        assert doc["subject_types_supported"] == ["public"]
        assert doc["id_token_signing_alg_values_supported"] == ["HS256"]


async def test_d2_the_four_documents_agree(harness: Harness) -> None:
    docs = [(await harness.http.get(p)).json() for p in AS_PATHS]
    assert docs[0] == docs[1]
    assert docs[2] == docs[3]
    assert {k: v for k, v in docs[2].items() if k in docs[0]} == docs[0]


@pytest.mark.parametrize("path", [*AS_PATHS, "/.well-known/oauth-protected-resource/mcp"])
async def test_d2_options_preflight_answers_with_cors(harness: Harness, path: str) -> None:
    response = await harness.http.options(
        path,
        headers={"Origin": "https://inspector.example", "Access-Control-Request-Method": "GET"},
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert "GET" in response.headers["access-control-allow-methods"]


@pytest.mark.parametrize(
    ("path", "resource"),
    [
        # RFC 9728 §3.3: `resource` is the URL the well-known path was derived from.
        ("/.well-known/oauth-protected-resource", ISSUER),
        ("/.well-known/oauth-protected-resource/mcp", f"{ISSUER}/mcp"),
    ],
)
async def test_d4_protected_resource_metadata(harness: Harness, path: str, resource: str) -> None:
    doc = (await harness.http.get(path)).json()
    assert doc["resource"] == resource
    assert doc["authorization_servers"] == [ISSUER]
    assert doc["bearer_methods_supported"] == ["header"]
    assert "offline_access" not in doc["scopes_supported"]
    assert no_nulls(doc)


async def test_d1_issuer_byte_identical_in_metadata_prm_jwt_and_authorize_response(
    harness: Harness,
) -> None:
    client = await harness.public_client()
    as_doc = (await harness.http.get("/.well-known/oauth-authorization-server")).json()
    prm = (await harness.http.get("/.well-known/oauth-protected-resource/mcp")).json()
    code, verifier = await harness.code_for(client["client_id"])
    location = (
        await harness.authorize(client["client_id"], redirect_uri="http://127.0.0.1:1/callback")
    ).headers["location"]
    token = (await harness.exchange(client["client_id"], code, verifier)).json()["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert as_doc["issuer"] == prm["authorization_servers"][0] == claims["iss"] == ISSUER
    assert "iss=https%3A%2F%2Fgw.example%3A8443" in location


async def test_cimd_advertised_only_when_a_resolver_works(make_harness: Any) -> None:
    class Resolver:
        async def resolve(self, client_id: str) -> Any:
            raise AssertionError("not called")

    on = await make_harness(cimd_enabled=True, client_resolver=Resolver())
    doc = (await on.http.get("/.well-known/oauth-authorization-server")).json()
    assert doc["client_id_metadata_document_supported"] is True


async def test_j1_jwks_published_at_advertised_uri(make_harness: Any) -> None:
    h = await make_harness(es256=True)
    doc = (await h.http.get("/.well-known/oauth-authorization-server")).json()
    jwks = (await h.http.get(doc["jwks_uri"].removeprefix(ISSUER))).json()
    assert jwks["keys"][0]["kty"] == "EC"
    assert jwks["keys"][0]["kid"] == h.tokens.ring.active.kid


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/.well-known/oauth-authorization-server", True),
        ("/oauth/token", True),
        ("/authorize", True),
        ("/token", True),
        ("/register", True),
        ("/mcp", False),
        ("/api/memories", False),
        ("/oauthx", False),
        ("/tokens", False),
    ],
)
def test_d8_is_authorization_path(path: str, expected: bool) -> None:
    assert is_authorization_path(path) is expected


@pytest.mark.parametrize("path", ["/authorize", "/token", "/register"])
async def test_d8_aliases_are_served(harness: Harness, path: str) -> None:
    method = harness.http.get if path == "/authorize" else harness.http.post
    response = await method(path)
    assert response.status_code != 404
