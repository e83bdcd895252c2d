"""Security review findings, each through the real app or the rule it was fixed in.

Numbers are the review's; PROTOCOL lines are named where one applies.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx
import pytest

from gateway.auth import Authenticator
from gateway.errors import InvalidClient, TemporarilyUnavailable
from gateway.net import parse_networks
from gateway.oauth.client_metadata import ClientMetadataResolver
from gateway.oauth.consent import consent_headers
from gateway.oauth.redirects import redirect_matches, redirect_origin, validate_redirect_uri
from gateway.oauth.revocation import RevocationCache, max_staleness
from gateway.oauth.tokens import AccessToken
from gateway.ratelimit import client_address, limit_key
from gateway.store.base import Revocation
from gateway.store.memory import MemoryStore
from tests.oauth.conftest import API_KEY, ISSUER, LOOPBACK_CB, Harness, basic, pkce, query_of
from tests.oauth.test_token import claims, offline_tokens, refresh_form

pytestmark = pytest.mark.anyio
RESOURCE = f"{ISSUER}/mcp"
DESCRIPTION_CHARSET = re.compile(r"[\x20-\x21\x23-\x5b\x5d-\x7e]*")


# 2 — consent page CSP lets the browser follow the 302 to the client


@pytest.mark.parametrize(
    ("uri", "origin"),
    [
        ("http://127.0.0.1:3000/callback", "http://127.0.0.1:3000"),
        ("http://[::1]:8976/cb", "http://[::1]:8976"),
        ("http://localhost/cb", "http://localhost"),
        ("https://Claude.AI/api/mcp/auth_callback", "https://claude.ai"),
        ("https://app.example:8443/cb?x=1", "https://app.example:8443"),
        ("cursor://anysphere.cursor-retrieval/oauth/callback", "cursor:"),
        ("http://evil.example\\@localhost/cb", None),
        ("https://a.example;script-src */cb", None),
    ],
)
def test_a6_redirect_origin_is_the_csp_source_of_the_redirect(uri: str, origin: str | None) -> None:
    assert redirect_origin(uri) == origin


def test_a6_consent_csp_form_action_names_the_redirect_origin() -> None:
    csp = consent_headers("http://127.0.0.1:54321/callback")["Content-Security-Policy"]
    assert "form-action 'self' http://127.0.0.1:54321;" in csp
    assert "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp


@pytest.mark.parametrize(
    ("redirect", "source"),
    [
        ("http://127.0.0.1:54321/callback", "http://127.0.0.1:54321"),
        ("cursor://anysphere.cursor-retrieval/cb", "cursor:"),
    ],
)
async def test_a6_consent_page_allows_its_pending_redirect_in_form_action(
    make_harness: Any, redirect: str, source: str
) -> None:
    h = await make_harness(consent="api_key", allowed_redirect_schemes=("cursor",))
    client = await h.register(
        redirect_uris=["http://127.0.0.1/callback", "cursor://anysphere.cursor-retrieval/cb"],
        token_endpoint_auth_method="none",
    )
    page = await h.authorize(
        client["client_id"],
        redirect_uri=redirect,
        code_challenge=pkce("v" * 43),
        code_challenge_method="S256",
    )
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert f"form-action 'self' {source};" in csp


# 4 — client input gives RFC errors, never a 500


@pytest.mark.parametrize("client_id", ["https://xn--a.com/x", "https://\u2488example.com/x"])
async def test_r6_idna_invalid_metadata_url_is_invalid_client(client_id: str) -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing may be fetched")

    resolver = ClientMetadataResolver(transport=httpx.MockTransport(unreachable))
    try:
        with pytest.raises(InvalidClient):
            await resolver.resolve(client_id)
    finally:
        await resolver.aclose()


@pytest.mark.parametrize("client_id", ["https://xn--a.com/x", "https://\u2488example.com/x"])
async def test_r6_idna_invalid_client_id_at_every_endpoint_is_4xx(
    make_harness: Any, client_id: str
) -> None:
    resolver = ClientMetadataResolver(transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    h = await make_harness(cimd_enabled=True, client_resolver=resolver)
    try:
        authorize = await h.authorize(client_id, redirect_uri=LOOPBACK_CB)
        assert authorize.status_code == 400
        form = {"client_id": client_id, "token": "t", "grant_type": "client_credentials"}
        for path in ("/oauth/token", "/oauth/revoke", "/oauth/introspect"):
            response = await h.http.post(path, data=form)
            assert response.status_code == 401, (path, response.text)
            assert response.json()["error"] == "invalid_client"
    finally:
        await resolver.aclose()


async def test_r6_metadata_documents_are_fetched_only_from_port_443() -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing may be fetched")

    resolver = ClientMetadataResolver(transport=httpx.MockTransport(unreachable))
    try:
        with pytest.raises(InvalidClient, match="port 443"):
            await resolver.resolve("https://client.example:8443/client.json")
    finally:
        await resolver.aclose()


async def test_r2_deeply_nested_json_is_invalid_client_metadata(harness: Harness) -> None:
    nested = b"[" * 30000 + b"]" * 30000
    json_type = {"Content-Type": "application/json"}
    response = await harness.http.post("/oauth/register", content=nested, headers=json_type)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client_metadata"
    body = await harness.register(client_name="A", redirect_uris=["https://a.example/cb"])
    auth = {"Authorization": f"Bearer {body['registration_access_token']}", **json_type}
    put = await harness.http.put(body["registration_client_uri"], content=nested, headers=auth)
    assert put.status_code == 400
    assert put.json()["error"] == "invalid_client_metadata"


# 5 — every AS POST and credential check is rate limited, per real client address


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/oauth/revoke"),
        ("POST", "/oauth/introspect"),
        ("GET", "/oauth/clients/mcp_client_x"),
        ("GET", "/oauth/register/mcp_client_x"),
        ("PUT", "/oauth/register/mcp_client_x"),
        ("DELETE", "/oauth/register/mcp_client_x"),
    ],
)
async def test_r5_credential_checks_are_rate_limited(
    make_harness: Any, method: str, path: str
) -> None:
    h = await make_harness(rate_limit_per_minute=2)
    auth = {"Authorization": "Bearer guess"}
    codes = [
        (await h.http.request(method, path, data={"token": "t"}, headers=auth)).status_code
        for _ in range(3)
    ]
    assert codes[:2] != [429, 429]
    assert codes[2] == 429


async def test_r5_forwarded_for_counts_only_behind_a_trusted_proxy(make_harness: Any) -> None:
    """P6: the ASGI test client's peer is 127.0.0.1."""

    async def register(h: Harness, forwarded: str) -> int:
        response = await h.http.post(
            "/oauth/register", json={"client_name": "x"}, headers={"X-Forwarded-For": forwarded}
        )
        return response.status_code

    behind = await make_harness(rate_limit_per_minute=1, trusted_proxies=("127.0.0.0/8",))
    assert await register(behind, "203.0.113.7") == 201
    assert await register(behind, "203.0.113.8") == 201
    assert await register(behind, "203.0.113.7") == 429
    direct = await make_harness(rate_limit_per_minute=1)
    assert await register(direct, "198.51.100.1") == 201
    assert await register(direct, "198.51.100.2") == 429


TRUSTED = parse_networks(["10.0.0.0/8"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "address"),
    [
        ("192.0.2.1", ["203.0.113.9"], "192.0.2.1"),  # untrusted peer: header ignored
        ("10.0.0.2", ["203.0.113.9"], "203.0.113.9"),
        ("10.0.0.2", ["1.1.1.1, 203.0.113.9"], "203.0.113.9"),  # spoofed left part ignored
        ("10.0.0.2", ["203.0.113.9, 10.0.0.5"], "203.0.113.9"),  # chain of proxies
        ("10.0.0.2", ["1.1.1.1", "203.0.113.9"], "203.0.113.9"),  # repeated header
        ("10.0.0.2", [], "10.0.0.2"),
        ("10.0.0.2", ["10.0.0.3"], "10.0.0.2"),
    ],
)
def test_p6_rate_limit_address(peer: str, forwarded: list[str], address: str) -> None:
    assert client_address(peer, forwarded, TRUSTED) == address


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::2", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("unknown", "unknown"),
    ],
)
def test_r5_ipv6_addresses_share_a_limit_per_64(address: str, key: str) -> None:
    assert limit_key(address) == key


# 7 — introspection: the operator only (RFC 7662 §4)


async def test_t7_self_registered_confidential_client_may_not_introspect(
    harness: Harness,
) -> None:
    _, tokens = await offline_tokens(harness)
    prober = await harness.register(client_name="prober", redirect_uris=["https://p.example/cb"])
    response = await harness.http.post(
        "/oauth/introspect",
        data={"token": tokens["access_token"]},
        headers=basic(prober["client_id"], prober["client_secret"]),
    )
    assert response.status_code == 403
    assert response.json()["error"] == "access_denied"
    assert "active" not in response.json()
    wrong_key = await harness.http.post(
        "/oauth/introspect",
        data={"token": tokens["access_token"]},
        headers={"Authorization": f"Bearer {API_KEY}x"},
    )
    assert wrong_key.status_code == 401
    key = await harness.http.post(
        "/oauth/introspect",
        data={"token": tokens["access_token"]},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert key.json()["active"] is True


# 8 — the revocation cache fails closed when it cannot be reloaded


class FailingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def list_revocations(self, now: float) -> list[Revocation]:
        if self.down:
            raise ConnectionError("store down")
        return await super().list_revocations(now)


def access(jti: str = "j", client_id: str = "c", family: str | None = None) -> AccessToken:
    return AccessToken("user", client_id, frozenset({"read"}), RESOURCE, 0, 100, jti, family)


async def test_j2_stale_revocation_list_fails_closed_with_503() -> None:
    store = FailingStore()
    ticks = [0.0]
    cache = RevocationCache(
        store, clock=lambda: 10.0, max_staleness=max_staleness(2.0), monotonic=lambda: ticks[0]
    )
    await cache.refresh()
    store.down = True
    ticks[0] = 9.0
    with pytest.raises(ConnectionError):
        await cache.refresh()
    assert cache.is_revoked(access()) is False  # a missed reload or four is tolerated
    ticks[0] = 10.5
    with pytest.raises(TemporarilyUnavailable):
        cache.is_revoked(access())
    store.down = False
    await cache.refresh()
    assert cache.is_revoked(access()) is False


async def test_j2_proxy_authenticator_answers_503_when_revocations_are_stale(
    harness: Harness,
) -> None:
    _, tokens = await offline_tokens(harness)
    cache = harness.server.revocations
    cache.last_refresh -= 3600
    authenticator = Authenticator(
        tokens=harness.tokens, resource=RESOURCE, api_key=None, is_revoked=cache.is_revoked
    )
    with pytest.raises(TemporarilyUnavailable) as caught:
        authenticator.authenticate(f"Bearer {tokens['access_token']}".encode(), None)
    assert caught.value.status_code == 503


# 9 — untrusted text cannot forge audit lines or leave RFC 6749's charset


async def test_a4_resource_with_newline_neither_forges_audit_lines_nor_breaks_charset(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.oauth")
    client = await harness.public_client()
    machine = await harness.register_as_operator(client_name="machine")
    forged = 'x\noauth token issued: grant=forged "\\'
    token = await harness.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "resource": forged},
        headers=basic(machine["client_id"], machine["client_secret"]),
    )
    assert token.json()["error"] == "invalid_target"
    assert DESCRIPTION_CHARSET.fullmatch(token.json()["error_description"])
    redirect = await harness.authorize(
        client["client_id"],
        redirect_uri=LOOPBACK_CB,
        resource=forged,
        code_challenge="c" * 43,
        code_challenge_method="S256",
    )
    assert query_of(redirect)["error"] == "invalid_target"
    assert DESCRIPTION_CHARSET.fullmatch(query_of(redirect)["error_description"])
    for record in caplog.records:
        assert "\n" not in record.getMessage()


# 10 — redirect URIs that parsers may read differently


@pytest.mark.parametrize(
    "uri",
    [
        "http://evil.example\\@localhost:1234/cb",
        "http://evil.example@localhost:1234/cb",
        "https://user:pw@app.example/cb",
        "https://app.exämple/cb",
        "https://app.example/cb\u00a0",
        "http://localhost:1234/c\\b",
    ],
)
def test_r3_ambiguous_redirect_uris_are_refused(uri: str) -> None:
    from gateway.errors import InvalidRedirectUri

    with pytest.raises(InvalidRedirectUri):
        validate_redirect_uri(uri)


@pytest.mark.parametrize(
    ("registered", "presented", "matches"),
    [
        ("http://localhost:1234/cb", "http://evil.com\\@localhost:1234/cb", False),
        ("http://localhost/cb", "http://evil.com@localhost:9/cb", False),
        ("http://localhost/cb", "http://localhost:9/cb", True),
        ("http://localhost/cb", "http://localhost:9/c\u00e9", False),
        ("http://evil\\@localhost/cb", "http://evil\\@localhost/cb", False),
    ],
)
def test_a2_ambiguous_presented_redirect_never_matches(
    registered: str, presented: str, matches: bool
) -> None:
    assert redirect_matches(registered, presented) is matches


# 12 — protocol deviations


async def test_a5_admin_in_a_delegated_grant_only_when_registered(
    harness: Harness, make_harness: Any
) -> None:
    client = await harness.public_client(scope="read write")
    code, verifier = await harness.code_for(client["client_id"], scope="read write admin")
    token = (await harness.exchange(client["client_id"], code, verifier)).json()
    assert token["scope"] == "read write"
    operator = await harness.register_as_operator(
        client_name="admin tool",
        redirect_uris=[LOOPBACK_CB],
        token_endpoint_auth_method="none",
        scope="read admin",
    )
    code, verifier = await harness.code_for(operator["client_id"], scope="admin")
    assert (await harness.exchange(operator["client_id"], code, verifier)).json()[
        "scope"
    ] == "admin"


async def test_r4_deleting_a_client_revokes_its_tokens(harness: Harness) -> None:
    """RFC 7592 §2.3: the client's grants and tokens go with it."""
    client, tokens = await offline_tokens(harness)
    auth = {"Authorization": f"Bearer {client['registration_access_token']}"}
    assert (
        await harness.http.delete(client["registration_client_uri"], headers=auth)
    ).status_code == 204
    verified = harness.tokens.verify(tokens["access_token"], audience=RESOURCE)
    assert harness.server.revocations.is_revoked(verified)
    key = {"Authorization": f"Bearer {API_KEY}"}
    for token in (tokens["access_token"], tokens["refresh_token"]):
        described = await harness.http.post("/oauth/introspect", data={"token": token}, headers=key)
        assert described.json() == {"active": False}
    refreshed = await harness.http.post(
        "/oauth/token", data=refresh_form(client["client_id"], tokens["refresh_token"])
    )
    assert refreshed.status_code in (400, 401)


@pytest.mark.parametrize("resource", [ISSUER, f"{ISSUER}/", f"{ISSUER}/mcp"])
async def test_a4_d4_issuer_origin_names_the_same_resource(harness: Harness, resource: str) -> None:
    """RFC 9728 §3.3: the root PRM says resource = issuer; a client may then ask for it."""
    root = (await harness.http.get("/.well-known/oauth-protected-resource")).json()
    assert root["resource"] == ISSUER
    client = await harness.public_client()
    code, verifier = await harness.code_for(client["client_id"], resource=resource)
    token = await harness.exchange(client["client_id"], code, verifier, resource=resource)
    assert token.status_code == 200, token.text
    assert claims(token.json()["access_token"])["aud"] == RESOURCE


async def test_a4_token_endpoint_accepts_a_repeated_resource_refuses_two(
    harness: Harness,
) -> None:
    client = await harness.public_client()
    code, verifier = await harness.code_for(client["client_id"])
    form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("client_id", client["client_id"]),
        ("redirect_uri", LOOPBACK_CB),
        ("code_verifier", verifier),
    ]
    two = [*form, ("resource", RESOURCE), ("resource", "https://other.example/mcp")]
    response = await harness.http.post("/oauth/token", content=_encode(two), headers=FORM)
    assert response.json()["error"] == "invalid_target"
    code, verifier = await harness.code_for(client["client_id"])
    form[1] = ("code", code)
    form[4] = ("code_verifier", verifier)
    same = [*form, ("resource", RESOURCE), ("resource", RESOURCE)]
    response = await harness.http.post("/oauth/token", content=_encode(same), headers=FORM)
    assert response.status_code == 200, response.text


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _encode(pairs: list[tuple[str, str]]) -> bytes:
    from urllib.parse import urlencode

    return urlencode(pairs).encode()
