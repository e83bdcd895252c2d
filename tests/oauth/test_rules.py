"""Table tests of the pure protocol rules (PROTOCOL R3, A2-A5, T1, T5)."""

from __future__ import annotations

import base64
from urllib.parse import quote_plus

import pytest

from gateway.errors import (
    InvalidClient,
    InvalidRedirectUri,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
)
from gateway.models import Client
from gateway.oauth.client_auth import check_secret, parse_credentials
from gateway.oauth.pkce import s256, validate_challenge, verifier_matches
from gateway.oauth.redirects import redirect_matches, validate_redirect_uri
from gateway.oauth.refresh import seal, unseal
from gateway.oauth.resource import canonical_resource, resolve_resource
from gateway.oauth.scopes import consented_scopes, grant_scopes, narrow_scopes
from gateway.store.base import hash_secret

RESOURCE = "https://gw.example:8443/mcp"


@pytest.mark.parametrize(
    ("uri", "ok"),
    [
        ("https://app.example.com/callback", True),
        ("https://app.example.com/cb?x=1", True),
        ("http://localhost:3000/cb", True),
        ("http://127.0.0.1/cb", True),
        ("http://[::1]:8080/cb", True),
        ("http://app.example.com/cb", False),
        ("http://localhost.evil.com/cb", False),
        ("https://app.example.com/cb#frag", False),
        ("javascript:alert(1)", False),
        ("data:text/html,hi", False),
        ("file:///etc/passwd", False),
        ("cursor://callback", False),
        ("/relative/cb", False),
        ("https:///nohost", False),
    ],
)
def test_r3_redirect_uri_registration_table(uri: str, ok: bool) -> None:
    if ok:
        assert validate_redirect_uri(uri) == uri
    else:
        with pytest.raises(InvalidRedirectUri):
            validate_redirect_uri(uri)


def test_r3_private_use_scheme_only_when_allowed_by_operator() -> None:
    assert validate_redirect_uri("cursor://anysphere/cb", ("cursor",)) == "cursor://anysphere/cb"
    with pytest.raises(InvalidRedirectUri):
        validate_redirect_uri("javascript://x", ("cursor", "javascript"))


@pytest.mark.parametrize(
    ("registered", "presented", "matches"),
    [
        ("http://127.0.0.1:3000/cb", "http://127.0.0.1:49152/cb", True),
        ("http://localhost/cb", "http://localhost:8765/cb", True),
        ("http://[::1]:1/cb", "http://[::1]:2/cb", True),
        ("http://127.0.0.1:3000/cb", "http://127.0.0.1:3000/other", False),
        ("http://127.0.0.1:3000/cb?a=1", "http://127.0.0.1:9/cb?a=2", False),
        ("http://127.0.0.1:3000/cb", "http://localhost:3000/cb", False),
        ("https://app.example/cb", "https://app.example:444/cb", False),
        ("https://app.example/cb", "https://app.example/cb/", False),
        ("https://app.example/cb", "https://app.example/cb", True),
        ("https://app.example/cb", "https://APP.example/cb", False),
    ],
)
def test_a2_redirect_matching_loopback_any_port_else_exact(
    registered: str, presented: str, matches: bool
) -> None:
    assert redirect_matches(registered, presented) is matches


VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"  # RFC 7636 appendix B


def test_a3_pkce_s256_matches_rfc7636_example() -> None:
    assert s256(VERIFIER) == CHALLENGE
    assert verifier_matches(VERIFIER, CHALLENGE)
    assert not verifier_matches(VERIFIER[:-1] + "Y", CHALLENGE)
    assert not verifier_matches("short", CHALLENGE)


@pytest.mark.parametrize(
    ("challenge", "method", "required", "error"),
    [
        (CHALLENGE, "S256", True, None),
        (CHALLENGE, "plain", False, InvalidRequest),
        (CHALLENGE, None, False, InvalidRequest),
        (None, None, True, InvalidRequest),
        (None, None, False, None),
        (None, "S256", False, InvalidRequest),
        ("too-short", "S256", False, InvalidRequest),
    ],
)
def test_a3_pkce_challenge_rules(
    challenge: str | None, method: str | None, required: bool, error: type[Exception] | None
) -> None:
    if error is None:
        assert validate_challenge(challenge, method, required=required) == challenge
    else:
        with pytest.raises(error):
            validate_challenge(challenge, method, required=required)


ALLOWED = frozenset({"read", "write", "offline_access"})


@pytest.mark.parametrize(
    ("requested", "granted"),
    [
        ("read", {"read"}),
        ("read admin", {"read"}),
        ("read write offline_access", {"read", "write", "offline_access"}),
        (None, set(ALLOWED)),  # documented: no scope → the client's registered scope
        ("", set(ALLOWED)),
    ],
)
def test_a5_requested_scopes_intersect_client_allowed(
    requested: str | None, granted: set[str]
) -> None:
    assert grant_scopes(requested, ALLOWED) == granted


@pytest.mark.parametrize(
    ("requested", "registered", "granted"),
    [
        ("read write", {"read"}, {"read", "write"}),
        ("read write offline_access", {"read"}, {"read", "write", "offline_access"}),
        ("admin", {"read", "admin"}, {"admin"}),
        ("read admin", {"read"}, {"read"}),
        (None, {"read", "offline_access"}, {"read", "offline_access"}),
        ("", {"read"}, {"read"}),
    ],
)
def test_a5_d6_delegated_grant_is_what_was_consented(
    requested: str | None, registered: set[str], granted: set[str]
) -> None:
    assert consented_scopes(requested, frozenset(registered)) == granted


@pytest.mark.parametrize(
    ("requested", "registered"),
    [("read superuser", {"read"}), ("", set()), ("admin", {"read", "write"})],
)
def test_a5_delegated_grant_refuses_unknown_or_empty_scope(
    requested: str, registered: set[str]
) -> None:
    with pytest.raises(InvalidScope):
        consented_scopes(requested, frozenset(registered))


@pytest.mark.parametrize("requested", ["read superuser", "admin"])
def test_a5_unknown_or_entirely_disallowed_scope_is_invalid_scope(requested: str) -> None:
    with pytest.raises(InvalidScope):
        grant_scopes(requested, ALLOWED)


def test_t5_refresh_scope_may_narrow_never_widen() -> None:
    original = frozenset({"read", "write"})
    assert narrow_scopes("read", original) == {"read"}
    assert narrow_scopes(None, original) == original
    with pytest.raises(InvalidScope):
        narrow_scopes("read admin", original)


@pytest.mark.parametrize(
    ("value", "same"),
    [
        ("https://gw.example:8443/mcp", True),
        ("HTTPS://GW.Example:8443/mcp", True),
        ("https://gw.example:8443/mcp/", True),
        ("https://gw.example:8443/MCP", False),
        ("https://gw.example/mcp", False),
        ("https://evil.example:8443/mcp", False),
        ("not a url", False),
    ],
)
def test_a4_resource_canonical_comparison(value: str, same: bool) -> None:
    assert (canonical_resource(value) == canonical_resource(RESOURCE)) is same
    if same:
        assert resolve_resource([value], RESOURCE) == RESOURCE
    else:
        with pytest.raises(InvalidTarget):
            resolve_resource([value], RESOURCE)


def test_a4_absent_resource_defaults_to_issuer_mcp() -> None:
    assert resolve_resource([], RESOURCE) == RESOURCE
    assert canonical_resource("https://gw.example:443/mcp") == "https://gw.example/mcp"


def _basic(client_id: str, secret: str) -> str:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def test_t1_basic_credentials_are_percent_decoded() -> None:
    creds = parse_credentials(_basic("client:1", "s3cr+t/=%"), {})
    assert (creds.client_id, creds.secret, creds.method) == (
        "client:1",
        "s3cr+t/=%",
        "client_secret_basic",
    )


@pytest.mark.parametrize(
    ("authorization", "form", "expected"),
    [
        (None, {"client_id": "a", "client_secret": "s"}, ("a", "s", "client_secret_post")),
        (None, {"client_id": "a"}, ("a", None, "none")),
        ("Bearer xyz", {"client_id": "a"}, ("a", None, "none")),
    ],
)
def test_t1_client_auth_method_detection(
    authorization: str | None, form: dict[str, str], expected: tuple[str, str | None, str]
) -> None:
    creds = parse_credentials(authorization, form)
    assert (creds.client_id, creds.secret, creds.method) == expected


@pytest.mark.parametrize(
    ("authorization", "form", "error"),
    [
        (_basic("a", "s"), {"client_secret": "s"}, InvalidRequest),
        (_basic("a", "s"), {"client_id": "b"}, InvalidRequest),
        ("Basic !!!notbase64", {}, InvalidClient),
        ("Basic " + base64.b64encode(b"nocolon").decode(), {}, InvalidClient),
        (None, {}, InvalidClient),
    ],
)
def test_t1_ambiguous_or_malformed_client_auth_rejected(
    authorization: str | None, form: dict[str, str], error: type[Exception]
) -> None:
    with pytest.raises(error):
        parse_credentials(authorization, form)


def test_t1_secret_check_and_basic_challenge() -> None:
    client = Client("c", (), "client_secret_basic", client_secret_hash=hash_secret("right"))
    check_secret(client, parse_credentials(_basic("c", "right"), {}), now=0)
    with pytest.raises(InvalidClient) as caught:
        check_secret(client, parse_credentials(_basic("c", "wrong"), {}), now=0)
    assert caught.value.headers["WWW-Authenticate"].startswith("Basic")
    with pytest.raises(InvalidClient) as caught:
        check_secret(client, parse_credentials(None, {"client_id": "c"}), now=0)
    assert "WWW-Authenticate" not in caught.value.headers


def test_t5_sealed_successor_opens_only_with_its_predecessor() -> None:
    sealed = seal("successor-token", "predecessor-token")
    assert b"successor-token" not in sealed
    assert unseal(sealed, "predecessor-token") == "successor-token"
    assert unseal(sealed, "another-token") is None
