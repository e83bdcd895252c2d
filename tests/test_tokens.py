import base64
import json
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.errors import InvalidToken
from gateway.oauth import keys
from gateway.oauth.tokens import TokenService
from tests.clock import Clock

ISSUER = "https://gw.test:8443"
AUDIENCE = f"{ISSUER}/mcp"


@pytest.fixture
def ring(tmp_path: Path) -> keys.KeyRing:
    return keys.load_or_create(tmp_path / "keys")


@pytest.fixture
def service(ring: keys.KeyRing, clock: Clock) -> TokenService:
    return TokenService(ring, issuer=ISSUER, ttl=3600, clock=clock)


def _issue(service: TokenService) -> str:
    return service.issue(
        subject="alice", client_id="c1", scopes=["read", "write"], audience=AUDIENCE
    ).token


def test_j1_token_is_an_rfc9068_jwt(service: TokenService, ring: keys.KeyRing) -> None:
    token = _issue(service)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "typ": "at+jwt", "kid": ring.active.kid}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert set(claims) >= {"iss", "sub", "aud", "client_id", "scope", "iat", "exp", "jti"}
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE
    assert claims["scope"] == "read write"
    assert claims["exp"] - claims["iat"] == 3600


def test_j2_verified_claims_round_trip(service: TokenService) -> None:
    claims = service.verify(_issue(service), audience=AUDIENCE)
    assert claims.subject == "alice"
    assert claims.client_id == "c1"
    assert claims.scopes == {"read", "write"}


def test_j1_key_survives_a_restart(tmp_path: Path, clock: Clock) -> None:
    first = TokenService(keys.load_or_create(tmp_path / "k"), issuer=ISSUER, ttl=60, clock=clock)
    token = _issue(first)
    second = TokenService(keys.load_or_create(tmp_path / "k"), issuer=ISSUER, ttl=60, clock=clock)
    assert second.verify(token, audience=AUDIENCE).subject == "alice"


def test_j1_rotation_keeps_old_keys_published_until_their_tokens_expire(
    tmp_path: Path, clock: Clock
) -> None:
    directory = tmp_path / "k"
    old = keys.load_or_create(directory, now=clock.now)
    token = _issue(TokenService(old, issuer=ISSUER, ttl=60, clock=clock))
    keys.rotate(directory, now=clock.now, keep_seconds=3600)
    rotated = keys.load_or_create(directory)
    assert rotated.active.kid != old.active.kid
    assert [k["kid"] for k in rotated.jwks()["keys"]] == [old.active.kid, rotated.active.kid]
    assert TokenService(rotated, issuer=ISSUER, ttl=60, clock=clock).verify(
        token, audience=AUDIENCE
    )
    keys.rotate(directory, now=clock.now + 7200, keep_seconds=3600)
    pruned = keys.load_or_create(directory)
    assert old.active.kid not in {k.kid for k in pruned.keys}
    assert not (directory / f"{old.active.kid}.pem").exists()


def test_jwks_publishes_no_private_parts(ring: keys.KeyRing) -> None:
    (jwk,) = ring.jwks()["keys"]
    assert set(jwk) == {"kty", "crv", "x", "y", "kid", "use", "alg"}
    assert jwk["kid"] == keys.thumbprint(jwk)


def test_j2_expired_token_is_rejected(service: TokenService, clock: Clock) -> None:
    token = _issue(service)
    clock.now += 3600 + 31
    with pytest.raises(InvalidToken, match="expired"):
        service.verify(token, audience=AUDIENCE)


def test_j2_expiry_is_checked_even_when_the_token_is_cached(
    service: TokenService, clock: Clock
) -> None:
    token = _issue(service)
    service.verify(token, audience=AUDIENCE)
    clock.now += 3600 + 31
    with pytest.raises(InvalidToken):
        service.verify(token, audience=AUDIENCE)


def test_j2_wrong_audience_is_rejected(service: TokenService) -> None:
    token = _issue(service)
    service.verify(token, audience=AUDIENCE)
    with pytest.raises(InvalidToken):
        service.verify(token, audience="https://other.test/mcp")


def test_j2_wrong_issuer_is_rejected(ring: keys.KeyRing, clock: Clock) -> None:
    other = TokenService(ring, issuer="https://evil.test", ttl=60, clock=clock)
    with pytest.raises(InvalidToken):
        TokenService(ring, issuer=ISSUER, ttl=60, clock=clock).verify(
            _issue(other), audience=AUDIENCE
        )


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_j2_alg_none_is_rejected(service: TokenService, ring: keys.KeyRing) -> None:
    good = jwt.decode(_issue(service), options={"verify_signature": False})
    forged = f"{_b64({'alg': 'none', 'typ': 'at+jwt', 'kid': ring.active.kid})}.{_b64(good)}."
    with pytest.raises(InvalidToken):
        service.verify(forged, audience=AUDIENCE)


def test_j2_hs256_signed_with_the_public_key_is_rejected(
    service: TokenService, ring: keys.KeyRing
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    assert isinstance(ring.active.public, ec.EllipticCurvePublicKey)
    public_pem = ring.active.public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = jwt.decode(_issue(service), options={"verify_signature": False})
    header = {"typ": "at+jwt", "kid": ring.active.kid}
    signing_input = f"{_b64({'alg': 'HS256', **header})}.{_b64(claims)}"
    import hashlib
    import hmac

    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    with pytest.raises(InvalidToken):
        service.verify(forged, audience=AUDIENCE)


def test_j2_typ_must_be_at_jwt(service: TokenService, ring: keys.KeyRing) -> None:
    claims = jwt.decode(_issue(service), options={"verify_signature": False})
    assert isinstance(ring.active.private, ec.EllipticCurvePrivateKey)
    id_token_like = jwt.encode(
        claims,
        ring.active.private,
        algorithm="ES256",
        headers={"kid": ring.active.kid, "typ": "JWT"},
    )
    with pytest.raises(InvalidToken):
        service.verify(id_token_like, audience=AUDIENCE)


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "eyJ.eyJ.sig", "x" * 5000])
def test_j2_malformed_tokens_are_invalid_not_errors(service: TokenService, garbage: str) -> None:
    with pytest.raises(InvalidToken):
        service.verify(garbage, audience=AUDIENCE)


def test_hs256_with_the_seed_secret(clock: Clock) -> None:
    ring = keys.hs256_ring("s" * 32)
    service = TokenService(ring, issuer=ISSUER, ttl=60, clock=clock)
    token = _issue(service)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert service.verify(token, audience=AUDIENCE).subject == "alice"
    assert ring.jwks() == {"keys": []}
    other = TokenService(keys.hs256_ring("t" * 32), issuer=ISSUER, ttl=60, clock=clock)
    with pytest.raises(InvalidToken):
        other.verify(token, audience=AUDIENCE)


def _first_kid(directory: str) -> str:
    return keys.load_or_create(Path(directory)).active.kid


def test_j1_replicas_starting_together_share_one_first_key(tmp_path: Path) -> None:
    from concurrent.futures import ProcessPoolExecutor

    directory = str(tmp_path / "shared-keys")
    with ProcessPoolExecutor(max_workers=6) as pool:
        kids = set(pool.map(_first_kid, [directory] * 12))
    assert len(kids) == 1
    assert len(list((tmp_path / "shared-keys").glob("*.pem"))) == 1


def _flip_s(token: str) -> str:
    from gateway.oauth.tokens import P256_ORDER

    signed, _, encoded = token.rpartition(".")
    raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    s = int.from_bytes(raw[32:], "big")
    flipped = raw[:32] + (P256_ORDER - s).to_bytes(32, "big")
    return signed + "." + base64.urlsafe_b64encode(flipped).rstrip(b"=").decode()


def test_es256_tokens_are_issued_low_s_and_high_s_twins_are_refused(
    service: TokenService,
) -> None:
    from gateway.oauth.tokens import is_low_s

    for _ in range(16):  # a random signature is high-S half of the time
        token = _issue(service)
        assert is_low_s(token)
        service.verify(token, audience=AUDIENCE)
        twin = _flip_s(token)  # mathematically valid too: the malleated form
        assert not is_low_s(twin)
        with pytest.raises(InvalidToken, match="high-S"):
            service.verify(twin, audience=AUDIENCE)
