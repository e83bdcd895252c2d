"""JWT access tokens per RFC 9068: issue and verify.

Verification (PROTOCOL J2) pins the algorithm to the key ring's kind (ES256 or HS256,
never `none`, never an HS/ES swap), requires `typ: at+jwt`, the issuer, the audience,
and `exp`/`iat` within a small leeway. A verified token is kept in a bounded cache
until it expires, so the hot path pays for the signature once per token, not per
request; revocation is checked by the caller on every request.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import jwt

from gateway.errors import InvalidToken
from gateway.oauth.keys import KeyRing

LEEWAY_SECONDS = 30
REQUIRED_CLAIMS = ("iss", "sub", "aud", "client_id", "iat", "exp", "jti")


@dataclass(frozen=True)
class AccessToken:
    subject: str
    client_id: str
    scopes: frozenset[str]
    audience: str
    issued_at: int
    expires_at: int
    jti: str
    family: str | None = None
    person: Person | None = None

    @property
    def scope(self) -> str:
        return " ".join(sorted(self.scopes))


@dataclass(frozen=True)
class Person:
    """Who a person is, as the identity provider said at sign-in: carried in the token
    (`email`, `name`, `groups` claims) so the proxy names them without a lookup."""

    email: str | None = None
    name: str | None = None
    groups: tuple[str, ...] = ()


MAX_GROUPS = 64
MAX_CLAIM_CHARS = 256


@dataclass(frozen=True)
class IssuedToken:
    token: str
    claims: AccessToken


class TokenService:
    def __init__(
        self,
        ring: KeyRing,
        *,
        issuer: str,
        ttl: int,
        clock: Callable[[], float] = time.time,
        cache_size: int = 10_000,
    ) -> None:
        self.ring = ring
        self.issuer = issuer
        self.ttl = ttl
        self.clock = clock
        self._cache: OrderedDict[str, AccessToken] = OrderedDict()
        self._cache_size = cache_size

    def issue(
        self,
        *,
        subject: str,
        client_id: str,
        scopes: Iterable[str],
        audience: str,
        family: str | None = None,
        ttl: int | None = None,
        person: Person | None = None,
    ) -> IssuedToken:
        now = int(self.clock())
        claims = AccessToken(
            subject=subject,
            client_id=client_id,
            scopes=frozenset(scopes),
            audience=audience,
            issued_at=now,
            expires_at=now + (ttl or self.ttl),
            jti=secrets.token_urlsafe(16),
            family=family,
            person=person,
        )
        payload: dict[str, object] = {
            "iss": self.issuer,
            "sub": claims.subject,
            "aud": claims.audience,
            "client_id": claims.client_id,
            "scope": claims.scope,
            "iat": claims.issued_at,
            "nbf": claims.issued_at,
            "exp": claims.expires_at,
            "jti": claims.jti,
        }
        if family:
            payload["sid"] = family
        if person is not None:
            payload.update(_person_claims(person))
        key = self.ring.active
        token = jwt.encode(
            payload,
            key.private,
            algorithm=key.algorithm,
            headers={"typ": "at+jwt", "kid": key.kid},
        )
        if key.algorithm == "ES256":
            token = low_s(token)
        return IssuedToken(token=token, claims=claims)

    def verify(self, token: str, *, audience: str) -> AccessToken:
        """The token's claims, or InvalidToken; the audience must be this resource."""
        cached = self._cache.get(token)
        now = self.clock()
        if cached is not None and cached.audience == audience:
            if cached.expires_at + LEEWAY_SECONDS > now:
                return cached
            self._cache.pop(token, None)
        claims = self._decode(token, audience, now)
        self._remember(token, claims)
        return claims

    def unexpired(self, claims: AccessToken) -> bool:
        """Whether claims `verify` returned are still within their lifetime (a cached
        verification's one remaining check besides revocation)."""
        return claims.expires_at + LEEWAY_SECONDS > self.clock()

    def _decode(self, token: str, audience: str, now: float) -> AccessToken:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("malformed token") from None
        key = self.ring.find(str(header.get("kid", "")))
        if key is None:
            raise InvalidToken("unknown signing key")
        if header.get("alg") != key.algorithm or header.get("typ") != "at+jwt":
            raise InvalidToken("unexpected token type or algorithm")
        if key.algorithm == "ES256" and not is_low_s(token):
            raise InvalidToken("non-canonical (high-S) ECDSA signature")
        try:
            payload = jwt.decode(
                token,
                key.public,
                algorithms=[key.algorithm],
                audience=audience,
                issuer=self.issuer,
                # Times are checked below against our clock, which tests can move.
                options={
                    "require": list(REQUIRED_CLAIMS),
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"token rejected: {exc}") from None
        _check_times(payload, now)
        return _claims(payload, audience)

    def _remember(self, token: str, claims: AccessToken) -> None:
        self._cache[token] = claims
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


def _check_times(payload: dict[str, object], now: float) -> None:
    expires, issued, not_before = (_number(payload, n) for n in ("exp", "iat", "nbf"))
    if expires is None or issued is None:
        raise InvalidToken("exp and iat are required")
    if expires + LEEWAY_SECONDS <= now:
        raise InvalidToken("token expired")
    if max(issued, not_before or 0.0) > now + LEEWAY_SECONDS:
        raise InvalidToken("token not yet valid")


def _number(payload: dict[str, object], name: str) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken(f"{name} must be a number")
    return float(value)


def _claims(payload: dict[str, object], audience: str) -> AccessToken:
    scope = payload.get("scope", "")
    if not isinstance(scope, str):
        raise InvalidToken("scope claim must be a string")
    family = payload.get("sid")
    return AccessToken(
        person=_person(payload),
        subject=str(payload["sub"]),
        client_id=str(payload["client_id"]),
        scopes=frozenset(scope.split()),
        audience=audience,
        issued_at=int(str(payload["iat"])),
        expires_at=int(str(payload["exp"])),
        jti=str(payload["jti"]),
        family=str(family) if family else None,
    )


def _person_claims(person: Person) -> dict[str, object]:
    claims: dict[str, object] = {}
    if person.email:
        claims["email"] = person.email
    if person.name:
        claims["name"] = person.name
    if person.groups:
        claims["groups"] = list(person.groups)
    return claims


def _person(payload: dict[str, object]) -> Person | None:
    email, name, groups = payload.get("email"), payload.get("name"), payload.get("groups")
    if email is None and name is None and groups is None:
        return None
    if not isinstance(groups, list | None) or not all(isinstance(g, str) for g in groups or []):
        raise InvalidToken("groups claim must be a list of strings")
    return Person(
        email=str(email)[:MAX_CLAIM_CHARS] if email else None,
        name=str(name)[:MAX_CLAIM_CHARS] if name else None,
        groups=tuple(str(g)[:MAX_CLAIM_CHARS] for g in (groups or [])[:MAX_GROUPS]),
    )


# ECDSA signatures are malleable: (r, s) and (r, n - s) both verify, so one token has
# two encodings. Tokens are issued with the low S and a high S is refused, so a token
# has exactly one valid form (the JWT is its cache key and its revocation identity).
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _signature(token: str) -> tuple[str, bytes] | None:
    signed, _, encoded = token.rpartition(".")
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (ValueError, binascii.Error):
        return None
    return (signed, raw) if len(raw) == 64 else None


def is_low_s(token: str) -> bool:
    """Whether an ES256 JWS signature has S <= n/2 (False when it is not 64 bytes)."""
    parts = _signature(token)
    return parts is not None and int.from_bytes(parts[1][32:], "big") <= P256_ORDER // 2


def low_s(token: str) -> str:
    """The same ES256 JWS with its signature's S replaced by n - S when S > n/2."""
    parts = _signature(token)
    if parts is None:
        return token
    signed, raw = parts
    s = int.from_bytes(raw[32:], "big")
    if s <= P256_ORDER // 2:
        return token
    flipped = raw[:32] + (P256_ORDER - s).to_bytes(32, "big")
    return signed + "." + base64.urlsafe_b64encode(flipped).rstrip(b"=").decode("ascii")
