import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from gateway.auth import Authenticator, Challenges, bearer_token, has_query_token
from gateway.errors import (
    InvalidRequest,
    InvalidToken,
    OAuthError,
    RawResponse,
    TemporarilyUnavailable,
    TooManyRequests,
    render,
)
from gateway.oauth import keys
from gateway.oauth.tokens import AccessToken, TokenService
from gateway.principal import Principal
from tests.clock import Clock

ISSUER = "https://gw.test:8443"
RESOURCE = f"{ISSUER}/mcp"
METADATA = f"{ISSUER}/.well-known/oauth-protected-resource/mcp"
API_KEY = "k3y-with-some-length-0123456789"
NOW = 1_800_000_000


class Revocations:
    def __init__(self) -> None:
        self.jtis: set[str] = set()
        self.broken = False

    def __call__(self, token: AccessToken) -> bool:
        if self.broken:
            raise ConnectionError("redis down")
        return token.jti in self.jtis


@pytest.fixture
def ring(tmp_path: Path) -> keys.KeyRing:
    return keys.load_or_create(tmp_path / "keys")


@pytest.fixture
def tokens(ring: keys.KeyRing, clock: Clock) -> TokenService:
    return TokenService(ring, issuer=ISSUER, ttl=3600, clock=clock)


@pytest.fixture
def revocations() -> Revocations:
    return Revocations()


@pytest.fixture
def authn(tokens: TokenService, revocations: Revocations) -> Authenticator:
    return Authenticator(tokens=tokens, resource=RESOURCE, api_key=API_KEY, is_revoked=revocations)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**overrides: object) -> dict[str, object]:
    claims: dict[str, object] = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": RESOURCE,
        "client_id": "c1",
        "scope": "read write",
        "iat": NOW,
        "exp": NOW + 3600,
        "jti": "j1",
    }
    claims.update(overrides)
    return claims


def _hand_made(
    header: Mapping[str, object], claims: Mapping[str, object], sign: bytes = b""
) -> bytes:
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(claims).encode())
    signature = b""
    if sign:
        signature = hmac.new(sign, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"Bearer {head}.{body}.{_b64(signature)}".encode()


def _bearer(token: str) -> bytes:
    return f"Bearer {token}".encode()


def _issue(tokens: TokenService, audience: str = RESOURCE, scopes: str = "read write") -> str:
    return tokens.issue(
        subject="alice", client_id="c1", scopes=scopes.split(), audience=audience
    ).token


# --- JWT (J2) -----------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_j2_valid_jwt_gives_its_principal(
    authn: Authenticator, tokens: TokenService, scheme: str
) -> None:
    issued = tokens.issue(subject="alice", client_id="c1", scopes=["read"], audience=RESOURCE)
    principal = authn.authenticate(f"{scheme} {issued.token}".encode(), None)
    assert principal == Principal(
        subject="alice",
        client_id="c1",
        scopes=frozenset({"read"}),
        kind="jwt",
        token_id=issued.claims.jti,
    )


def test_j2_hs256_ring_tokens_are_accepted(clock: Clock, revocations: Revocations) -> None:
    service = TokenService(keys.hs256_ring("s" * 40), issuer=ISSUER, ttl=60, clock=clock)
    authn = Authenticator(tokens=service, resource=RESOURCE, api_key=None, is_revoked=revocations)
    principal = authn.authenticate(_bearer(_issue(service)), None)
    assert principal is not None
    assert principal.kind == "jwt"
    assert principal.scopes == frozenset({"read", "write"})


@pytest.mark.parametrize("garbage", ["x", "a.b.c", "eyJhbGciOiJFUzI1NiJ9..", "é.é.é"])
def test_j2_garbage_token_is_invalid_token(authn: Authenticator, garbage: str) -> None:
    with pytest.raises(InvalidToken):
        authn.authenticate(_bearer(garbage).decode().encode("utf-8"), None)


def test_j2_expired_token_is_refused(
    authn: Authenticator, tokens: TokenService, clock: Clock
) -> None:
    token = _issue(tokens)
    assert authn.authenticate(_bearer(token), None) is not None
    clock.now += 3600 + 31  # past exp plus the 30 s leeway
    with pytest.raises(InvalidToken, match="expired"):
        authn.authenticate(_bearer(token), None)


def test_j2_wrong_audience_is_refused(authn: Authenticator, tokens: TokenService) -> None:
    token = _issue(tokens, audience="https://other.test/mcp")
    with pytest.raises(InvalidToken, match=r"(?i)audience"):
        authn.authenticate(_bearer(token), None)


def test_j2_wrong_issuer_is_refused(authn: Authenticator, ring: keys.KeyRing, clock: Clock) -> None:
    foreign = TokenService(ring, issuer="https://evil.test", ttl=3600, clock=clock)
    with pytest.raises(InvalidToken, match="issuer"):
        authn.authenticate(_bearer(_issue(foreign)), None)


def test_j2_unknown_kid_is_refused(authn: Authenticator, tmp_path: Path, clock: Clock) -> None:
    other = TokenService(
        keys.load_or_create(tmp_path / "other"), issuer=ISSUER, ttl=60, clock=clock
    )
    with pytest.raises(InvalidToken, match="unknown signing key"):
        authn.authenticate(_bearer(_issue(other)), None)


def test_j2_revoked_token_is_refused(
    authn: Authenticator, tokens: TokenService, revocations: Revocations
) -> None:
    issued = tokens.issue(subject="alice", client_id="c1", scopes=["read"], audience=RESOURCE)
    assert authn.authenticate(_bearer(issued.token), None) is not None
    revocations.jtis.add(issued.claims.jti)
    with pytest.raises(InvalidToken, match="revoked"):
        authn.authenticate(_bearer(issued.token), None)


def test_j2_revocation_store_failure_fails_closed(
    authn: Authenticator, tokens: TokenService, revocations: Revocations
) -> None:
    revocations.broken = True
    with pytest.raises(TemporarilyUnavailable):
        authn.authenticate(_bearer(_issue(tokens)), None)


def test_j2_alg_none_is_refused(authn: Authenticator, ring: keys.KeyRing) -> None:
    header = {"alg": "none", "typ": "at+jwt", "kid": ring.active.kid}
    with pytest.raises(InvalidToken):
        authn.authenticate(_hand_made(header, _claims()), None)


def test_j2_hs256_signed_with_the_es256_public_key_is_refused(
    authn: Authenticator, ring: keys.KeyRing
) -> None:
    public = ring.active.public
    assert not isinstance(public, bytes)
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "at+jwt", "kid": ring.active.kid}
    with pytest.raises(InvalidToken, match="algorithm"):
        authn.authenticate(_hand_made(header, _claims(), sign=pem), None)


def test_j2_es256_token_is_refused_by_an_hs256_gateway(
    tokens: TokenService, clock: Clock, revocations: Revocations
) -> None:
    hs = TokenService(keys.hs256_ring("s" * 40), issuer=ISSUER, ttl=60, clock=clock)
    authn = Authenticator(tokens=hs, resource=RESOURCE, api_key=None, is_revoked=revocations)
    with pytest.raises(InvalidToken):
        authn.authenticate(_bearer(_issue(tokens)), None)


def test_j2_hs256_forged_with_kid_of_another_secret_is_refused(
    clock: Clock, revocations: Revocations
) -> None:
    ring = keys.hs256_ring("s" * 40)
    service = TokenService(ring, issuer=ISSUER, ttl=60, clock=clock)
    authn = Authenticator(tokens=service, resource=RESOURCE, api_key=None, is_revoked=revocations)
    header = {"alg": "HS256", "typ": "at+jwt", "kid": ring.active.kid}
    with pytest.raises(InvalidToken):
        authn.authenticate(_hand_made(header, _claims(), sign=b"t" * 40), None)
    good = _hand_made(header, _claims(), sign=b"s" * 40)
    assert authn.authenticate(good, None) is not None


def test_j2_token_without_at_jwt_type_is_refused(authn: Authenticator, ring: keys.KeyRing) -> None:
    token = jwt.encode(
        _claims(), ring.active.private, algorithm="ES256", headers={"kid": ring.active.kid}
    )
    with pytest.raises(InvalidToken):
        authn.authenticate(_bearer(token), None)


def test_j2_oauth_disabled_accepts_only_the_api_key(
    tokens: TokenService, revocations: Revocations
) -> None:
    authn = Authenticator(tokens=None, resource=RESOURCE, api_key=API_KEY, is_revoked=revocations)
    with pytest.raises(InvalidToken, match="OAuth is disabled"):
        authn.authenticate(_bearer(_issue(tokens)), None)
    principal = authn.authenticate(_bearer(API_KEY), None)
    assert principal is not None
    assert principal.kind == "api_key"


# --- API key (J4) ---------------------------------------------------------------------

API_PRINCIPAL = Principal(
    subject="api-key",
    client_id="api-key",
    scopes=frozenset({"read", "write", "admin"}),
    kind="api_key",
)


@pytest.mark.parametrize(
    ("authorization", "x_api_key"),
    [
        (f"Bearer {API_KEY}".encode(), None),
        (f"bearer   {API_KEY}  ".encode(), None),
        (None, API_KEY.encode()),
        (None, f" {API_KEY} ".encode()),
        (f"Bearer {API_KEY}".encode(), API_KEY.encode()),
        (b"Basic dXNlcjpwYXNz", API_KEY.encode()),
    ],
)
def test_j4_api_key_as_bearer_or_x_api_key(
    authn: Authenticator, authorization: bytes | None, x_api_key: bytes | None
) -> None:
    assert authn.authenticate(authorization, x_api_key) == API_PRINCIPAL


@pytest.mark.parametrize(
    ("authorization", "x_api_key"),
    [
        (b"Bearer wrong-key", None),
        (None, b"wrong-key"),
        (None, API_KEY[:-1].encode()),
        (None, (API_KEY + "x").encode()),
    ],
)
def test_j4_wrong_api_key_is_invalid_token(
    authn: Authenticator, authorization: bytes | None, x_api_key: bytes | None
) -> None:
    with pytest.raises(InvalidToken):
        authn.authenticate(authorization, x_api_key)


def test_j4_no_api_key_configured_accepts_none(revocations: Revocations) -> None:
    authn = Authenticator(tokens=None, resource=RESOURCE, api_key=None, is_revoked=revocations)
    with pytest.raises(InvalidToken):
        authn.authenticate(None, b"anything")
    with pytest.raises(InvalidToken):
        authn.authenticate(b"Bearer anything", None)


def test_j4_api_key_is_compared_in_constant_time(
    authn: Authenticator, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    for candidate in (b"x", b"much-longer-than-the-configured-key" * 4, API_KEY.encode()):
        with contextlib.suppress(InvalidToken):
            authn.authenticate(None, candidate)
    # Fixed-length digests: the comparison time says nothing about the key's length.
    assert seen == [(32, 32)] * 3


def test_j4_disagreeing_authorization_and_x_api_key_is_invalid_request(
    authn: Authenticator, tokens: TokenService
) -> None:
    with pytest.raises(InvalidRequest, match="different credentials"):
        authn.authenticate(_bearer(_issue(tokens)), API_KEY.encode())


def test_j4_empty_x_api_key_is_invalid_request(authn: Authenticator) -> None:
    with pytest.raises(InvalidRequest):
        authn.authenticate(None, b"  ")


# --- Header parsing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"Bearer abc", b"abc"),
        (b"bearer abc", b"abc"),
        (b"Bearer    abc  ", b"abc"),
        (b"Basic dXNlcjpwYXNz", None),
        (b"Bearerabc", None),
        (b"Digest username=x", None),
        (b"", None),
    ],
)
def test_d5_bearer_token_parsing(header: bytes, expected: bytes | None) -> None:
    assert bearer_token(header) == expected


@pytest.mark.parametrize("header", [b"Bearer", b"Bearer ", b"Bearer a b", b"Bearer a\tb"])
def test_d5_malformed_bearer_is_invalid_request(header: bytes) -> None:
    with pytest.raises(InvalidRequest):
        bearer_token(header)


def test_d5_no_credentials_gives_none(authn: Authenticator) -> None:
    assert authn.authenticate(None, None) is None
    assert authn.authenticate(b"Basic dXNlcjpwYXNz", None) is None


@pytest.mark.parametrize(
    ("query", "refused"),
    [
        (b"access_token=abc", True),
        (b"a=1&access_token=abc", True),
        (b"access%5Ftoken=abc", True),
        (b"access_token", True),
        (b"q=access_token", False),
        (b"my_access_token=1", False),
        (b"q=100%25", False),
        (b"", False),
    ],
)
def test_query_string_token_detection(query: bytes, refused: bool) -> None:
    assert has_query_token(query) is refused


def test_query_string_token_is_refused_with_invalid_request(
    authn: Authenticator, tokens: TokenService
) -> None:
    token = _issue(tokens)
    with pytest.raises(InvalidRequest, match="query string"):
        authn.authenticate(None, None, query=f"access_token={token}".encode())
    assert authn.authenticate(_bearer(token), None, query=b"limit=10") is not None


# --- Challenges (D5, D6) -------------------------------------------------------------------


def _header(raw: RawResponse, name: bytes) -> str | None:
    values = [v.decode() for k, v in raw.headers if k == name]
    assert len(values) <= 1
    return values[0] if values else None


@pytest.fixture
def challenges() -> Challenges:
    return Challenges(METADATA)


def test_d5_401_without_credentials_has_no_error(challenges: Challenges) -> None:
    raw = challenges.unauthorized(frozenset({"read"}), None)
    assert raw.status == 401
    assert _header(raw, b"www-authenticate") == (
        f'Bearer resource_metadata="{METADATA}", scope="read"'
    )
    assert "error=" not in (_header(raw, b"www-authenticate") or "")
    assert json.loads(raw.body)["error"] == "invalid_token"
    assert _header(raw, b"content-type") == "application/json"
    assert _header(raw, b"content-length") == str(len(raw.body))


def test_d5_401_with_bad_token_names_invalid_token(challenges: Challenges) -> None:
    raw = challenges.unauthorized(frozenset({"write", "read"}), InvalidToken("token expired"))
    assert raw.status == 401
    assert _header(raw, b"www-authenticate") == (
        'Bearer error="invalid_token", error_description="token expired", '
        f'resource_metadata="{METADATA}", scope="read write"'
    )
    assert json.loads(raw.body) == {"error": "invalid_token", "error_description": "token expired"}


def test_d5_description_is_escaped_inside_the_quoted_string(challenges: Challenges) -> None:
    raw = challenges.unauthorized(frozenset({"read"}), InvalidToken('bad "x" \\ y\r\nInjected: 1'))
    header = _header(raw, b"www-authenticate")
    assert header is not None
    assert 'error_description="bad \\"x\\" \\\\ y??Injected: 1"' in header
    assert "\r" not in header
    assert "\n" not in header


def test_d5_route_without_scopes_omits_the_scope_parameter(challenges: Challenges) -> None:
    raw = challenges.unauthorized(frozenset(), None)
    assert _header(raw, b"www-authenticate") == f'Bearer resource_metadata="{METADATA}"'


def test_d5_invalid_request_is_400_with_a_challenge(challenges: Challenges) -> None:
    raw = challenges.unauthorized(frozenset({"read"}), InvalidRequest("two credentials"))
    assert raw.status == 400
    assert (_header(raw, b"www-authenticate") or "").startswith('Bearer error="invalid_request"')
    assert json.loads(raw.body)["error"] == "invalid_request"


def test_d6_insufficient_scope_lists_every_needed_scope(challenges: Challenges) -> None:
    raw = challenges.forbidden(frozenset({"write", "read"}))
    assert raw.status == 403
    assert _header(raw, b"www-authenticate") == (
        f'Bearer error="insufficient_scope", scope="read write", resource_metadata="{METADATA}"'
    )
    assert json.loads(raw.body)["error"] == "insufficient_scope"


def test_unmatched_route_is_denied_without_challenge(challenges: Challenges) -> None:
    raw = challenges.denied()
    assert raw.status == 403
    assert _header(raw, b"www-authenticate") is None
    assert json.loads(raw.body)["error"] == "access_denied"


def test_generic_error_renders_rfc_json() -> None:
    raw = render(InvalidRequest("the request body is not valid JSON"))
    assert raw.status == 400
    assert json.loads(raw.body) == {
        "error": "invalid_request",
        "error_description": "the request body is not valid JSON",
    }
    assert _header(raw, b"www-authenticate") is None


def test_cached_responses_are_not_altered_by_callers(challenges: Challenges) -> None:
    first = challenges.forbidden(frozenset({"admin"}))
    first.headers.append((b"access-control-allow-origin", b"*"))
    second = challenges.forbidden(frozenset({"admin"}))
    assert _header(second, b"access-control-allow-origin") is None
    denied = challenges.denied()
    denied.headers.clear()
    assert challenges.denied().headers


def test_d5_failed_authentication_renders_the_invalid_token_challenge(
    authn: Authenticator, challenges: Challenges
) -> None:
    error: OAuthError | None = None
    try:
        authn.authenticate(b"Bearer not-a-jwt", None)
    except OAuthError as exc:
        error = exc
    raw = challenges.unauthorized(frozenset({"read"}), error)
    assert raw.status == 401
    assert (_header(raw, b"www-authenticate") or "").startswith('Bearer error="invalid_token"')


def test_authenticate_is_fast_enough_for_the_hot_path(
    authn: Authenticator, tokens: TokenService
) -> None:
    header = _bearer(_issue(tokens))
    authn.authenticate(header, None)  # first call verifies the signature and caches
    rounds = 2000
    start = time.perf_counter()
    for _ in range(rounds):
        authn.authenticate(header, None)
    per_call = (time.perf_counter() - start) / rounds
    assert per_call < 50e-6  # generous bound; measured ≈ 2 µs


def test_error_headers_are_kept_per_error() -> None:
    first = render(TooManyRequests(5))
    second = render(TooManyRequests(9))
    assert first.status == 429
    assert _header(first, b"retry-after") == "5"
    assert _header(second, b"retry-after") == "9"


def test_principal_is_rebuilt_for_a_new_token_with_the_same_jti(
    clock: Clock, revocations: Revocations
) -> None:
    ring = keys.hs256_ring("s" * 40)
    service = TokenService(ring, issuer=ISSUER, ttl=60, clock=clock)
    authn = Authenticator(tokens=service, resource=RESOURCE, api_key=None, is_revoked=revocations)
    header = {"alg": "HS256", "typ": "at+jwt", "kid": ring.active.kid}
    alice = authn.authenticate(_hand_made(header, _claims(), sign=b"s" * 40), None)
    bob = authn.authenticate(_hand_made(header, _claims(sub="bob"), sign=b"s" * 40), None)
    assert alice is not None
    assert bob is not None
    assert (alice.subject, bob.subject) == ("alice", "bob")


# --- A repeated Authorization value (the hot path's memo) ------------------------------


def _counting(tokens: TokenService, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    verify = tokens.verify

    def counted(token: str, *, audience: str) -> AccessToken:
        calls.append(token)
        return verify(token, audience=audience)

    monkeypatch.setattr(tokens, "verify", counted)
    return calls


def test_a_repeated_authorization_value_is_not_verified_again(
    authn: Authenticator, tokens: TokenService, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _counting(tokens, monkeypatch)
    header = _bearer(_issue(tokens))
    first = authn.authenticate(header, None)
    assert authn.authenticate(header, None) is first
    assert authn.authenticate(header, None) is first
    assert len(calls) == 1


def test_a_remembered_value_is_still_checked_for_revocation_and_expiry(
    authn: Authenticator, tokens: TokenService, revocations: Revocations, clock: Clock
) -> None:
    issued = tokens.issue(subject="alice", client_id="c1", scopes=["read"], audience=RESOURCE)
    header = _bearer(issued.token)
    assert authn.authenticate(header, None) is not None
    revocations.broken = True
    with pytest.raises(TemporarilyUnavailable):
        authn.authenticate(header, None)
    revocations.broken = False
    revocations.jtis.add(issued.claims.jti)
    with pytest.raises(InvalidToken, match="revoked"):
        authn.authenticate(header, None)
    revocations.jtis.clear()
    assert authn.authenticate(header, None) is not None
    clock.now += 3600 + 31
    with pytest.raises(InvalidToken, match="expired"):
        authn.authenticate(header, None)
    with pytest.raises(InvalidToken, match="expired"):
        authn.authenticate(header, None)


@pytest.mark.parametrize("spelling", ["bearer {}", "Bearer  {}", "Bearer {} ", "BEARER {}"])
def test_only_the_canonical_spelling_is_remembered(
    authn: Authenticator, tokens: TokenService, monkeypatch: pytest.MonkeyPatch, spelling: str
) -> None:
    """One token is one remembered value: other spellings (which an authenticated client
    could vary without end) are verified every time."""
    calls = _counting(tokens, monkeypatch)
    header = spelling.format(_issue(tokens)).encode()
    for _ in range(3):
        assert authn.authenticate(header, None) is not None
    assert len(calls) == 3


def test_a_padded_value_over_4_kib_is_verified_every_time(
    authn: Authenticator, tokens: TokenService, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _counting(tokens, monkeypatch)
    header = b"Bearer " + _issue(tokens).encode() + b" " * 5000
    for _ in range(3):
        assert authn.authenticate(header, None) is not None
    assert len(calls) == 3


def test_an_x_api_key_beside_a_remembered_value_is_still_checked(
    authn: Authenticator, tokens: TokenService
) -> None:
    header = _bearer(_issue(tokens))
    assert authn.authenticate(header, None) is not None
    with pytest.raises(InvalidRequest, match="different credentials"):
        authn.authenticate(header, API_KEY.encode())
