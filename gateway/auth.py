"""Credentials → Principal, and the 401/403 responses of a protected route.

Credentials (PROTOCOL J2, J4): `Authorization: Bearer <JWT>` checked by TokenService
for this resource's audience and then against revocation; or the legacy `MCP_API_KEY`
as a Bearer token or in `X-API-Key`, compared in constant time, acting as subject and
client `api-key` with scopes `read write admin`. With OAuth disabled only the key works.

Challenges (PROTOCOL D5, D6, RFC 6750 §3): a 401 names the resource metadata and the
scopes the route needs, and carries `error="invalid_token"` only when a token was sent;
a 403 `insufficient_scope` names every scope the operation needs. Responses are raw
ASGI pieces rendered by `gateway.errors.render` once per distinct (scopes, error)
and reused.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from urllib.parse import unquote_to_bytes

from gateway.errors import (
    AccessDenied,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    OAuthError,
    RawResponse,
    TemporarilyUnavailable,
    render,
)
from gateway.oauth.tokens import AccessToken, TokenService
from gateway.principal import CredentialKind, Principal

API_KEY_SCOPES = frozenset({"read", "write", "admin"})
API_KEY_IDENTITY = "api-key"
_CACHE_LIMIT = 512
_PRINCIPAL_LIMIT = 10_000
# A Bearer token the gateway issued is well under this; longer ones are verified each
# time rather than remembered.
_KNOWN_VALUE_BYTES = 4096

Headers = list[tuple[bytes, bytes]]


class Authenticator:
    def __init__(
        self,
        *,
        tokens: TokenService | None,
        resource: str,
        api_key: str | None,
        is_revoked: Callable[[AccessToken], bool],
    ) -> None:
        self._tokens = tokens
        self._resource = resource
        self._is_revoked = is_revoked
        self._key_digest = _digest(api_key.encode()) if api_key else None
        self._key_principal = Principal(
            subject=API_KEY_IDENTITY,
            client_id=API_KEY_IDENTITY,
            scopes=API_KEY_SCOPES,
            kind="api_key",
        )
        # Building a frozen Principal costs about 1 µs; TokenService hands back the same
        # AccessToken object while it caches a token, so its Principal is reused too.
        self._principals: dict[str, tuple[AccessToken, Principal]] = {}
        # Authorization header values that carried a verified token, as sent: the same
        # bytes verify the same way, so a repeat needs only the lifetime and revocation
        # checks. Only the canonical spelling `Bearer <token>` is remembered, so one
        # token is one entry however a client pads or cases it (bounded: values up to
        # _KNOWN_VALUE_BYTES, _PRINCIPAL_LIMIT entries).
        self._known: dict[bytes, tuple[AccessToken, Principal]] = {}

    def authenticate(
        self, authorization: bytes | None, api_key_header: bytes | None, *, query: bytes = b""
    ) -> Principal | None:
        """The request's principal; None when it sent no credentials at all.

        Raises InvalidToken (401) for a credential that does not check out and
        InvalidRequest (400) for a malformed or ambiguous one, or a token in the query.
        """
        if query and has_query_token(query):
            raise InvalidRequest(
                "access tokens in the query string are refused (OAuth 2.1): "
                "send them in the Authorization header"
            )
        if api_key_header is None and authorization is not None:
            known = self._known.get(authorization)
            if known is not None:
                claims, principal = known
                if self._tokens is not None and self._tokens.unexpired(claims):
                    try:  # _check_revocation, inline: this is every repeated request
                        revoked = self._is_revoked(claims)
                    except Exception:
                        raise TemporarilyUnavailable(
                            "token revocation status is unavailable"
                        ) from None
                    if revoked:
                        raise InvalidToken("token has been revoked")
                    return principal
                del self._known[authorization]
        bearer = bearer_token(authorization) if authorization is not None else None
        if api_key_header is not None:
            key = api_key_header.strip()
            if not key:
                raise InvalidRequest("the X-API-Key header is empty")
            if bearer is not None and bearer != key:
                raise InvalidRequest("Authorization and X-API-Key carry different credentials")
            if self._is_api_key(key):
                return self._key_principal
            raise InvalidToken("invalid API key")
        if bearer is None:
            return None
        if self._is_api_key(bearer):
            return self._key_principal
        principal, claims = self._verify(bearer)
        if (
            api_key_header is None
            and authorization is not None
            and len(authorization) <= _KNOWN_VALUE_BYTES
            and authorization == b"Bearer " + bearer
        ):
            if len(self._known) >= _PRINCIPAL_LIMIT:
                self._known.clear()
            self._known[authorization] = (claims, principal)
        return principal

    def _is_api_key(self, value: bytes) -> bool:
        # Comparing digests keeps the time independent of the key's length as well.
        expected = self._key_digest
        return expected is not None and hmac.compare_digest(_digest(value), expected)

    def _verify(self, token: bytes) -> tuple[Principal, AccessToken]:
        if self._tokens is None:
            raise InvalidToken("OAuth is disabled on this gateway: only the API key is accepted")
        try:
            claims = self._tokens.verify(token.decode("latin-1"), audience=self._resource)
        except (ValueError, TypeError, KeyError):
            raise InvalidToken("malformed token claims") from None
        self._check_revocation(claims)
        known = self._principals.get(claims.jti)
        if known is not None and known[0] is claims:
            return known[1], claims
        principal = principal_of(claims, "jwt")
        if len(self._principals) >= _PRINCIPAL_LIMIT:
            self._principals.clear()
        self._principals[claims.jti] = (claims, principal)
        return principal, claims

    def _check_revocation(self, claims: AccessToken) -> None:
        try:
            revoked = self._is_revoked(claims)
        except Exception:
            # Fail closed: without a revocation answer the token is not accepted.
            raise TemporarilyUnavailable("token revocation status is unavailable") from None
        if revoked:
            raise InvalidToken("token has been revoked")


def principal_of(claims: AccessToken, kind: CredentialKind) -> Principal:
    """The Principal a verified token (or browser session) acts as."""
    person = claims.person
    return Principal(
        subject=claims.subject,
        client_id=claims.client_id,
        scopes=claims.scopes,
        kind=kind,
        token_id=claims.jti,
        email=person.email if person else None,
        name=person.name if person else None,
        groups=person.groups if person else (),
    )


def bearer_token(authorization: bytes) -> bytes | None:
    """The token of a `Bearer` Authorization header (scheme case-insensitive, RFC 7235).

    Another scheme counts as no credentials (RFC 6750 §3.1: an unsupported method gets
    a challenge without an error code); `Bearer` without a single token is malformed.
    """
    scheme, _, rest = authorization.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    token = rest.strip()
    if not token or b" " in token or b"\t" in token:
        raise InvalidRequest("malformed Authorization header: expected 'Bearer <token>'")
    return token


def has_query_token(query: bytes) -> bool:
    """True when the query string has an `access_token` parameter (RFC 6750 §2.3)."""
    if b"access_token" not in query and b"%" not in query:
        return False
    for pair in query.split(b"&"):
        name = pair.partition(b"=")[0]
        if b"%" in name or b"+" in name:
            name = unquote_to_bytes(name.replace(b"+", b" "))
        if name == b"access_token":
            return True
    return False


class Challenges:
    """401/403 responses of protected routes, rendered once per distinct input and cached."""

    def __init__(self, resource_metadata_url: str) -> None:
        self._metadata = f'resource_metadata="{_escape(resource_metadata_url)}"'
        self._cache: dict[tuple[object, ...], RawResponse] = {}
        self._denied = render(AccessDenied(_DENIED))

    def unauthorized(self, required: frozenset[str], error: OAuthError | None) -> RawResponse:
        """D5: 401 challenge; no `error=` without credentials. Also renders a 400
        invalid_request or 503 raised by `authenticate` with the same challenge."""
        key: tuple[object, ...] = (
            ("401", required)
            if error is None
            else ("401", required, type(error), error.description, *error.headers.items())
        )
        return self._cached(key, lambda: self._unauthorized(required, error))

    def forbidden(self, required: frozenset[str]) -> RawResponse:
        """D6: 403 insufficient_scope naming every scope the operation needs."""
        return self._cached(("403", required), lambda: self._forbidden(required))

    def denied(self) -> RawResponse:
        """403 access_denied for a route no policy rule matches (no challenge: new
        credentials would not help)."""
        return _copy(self._denied)

    def _unauthorized(self, required: frozenset[str], error: OAuthError | None) -> RawResponse:
        params = [self._metadata]
        if required:
            params.append(f'scope="{_scope(required)}"')
        if error is None:
            return render(InvalidToken(_AUTH_REQUIRED), challenge="Bearer " + ", ".join(params))
        described = [f'error="{error.error}"']
        if error.description:
            described.append(f'error_description="{_escape(error.description)}"')
        return render(error, challenge="Bearer " + ", ".join(described + params))

    def _forbidden(self, required: frozenset[str]) -> RawResponse:
        scope = _scope(required)
        challenge = f'Bearer error="insufficient_scope", scope="{scope}", {self._metadata}'
        return render(
            InsufficientScope(f"this operation needs the scopes: {scope}"), challenge=challenge
        )

    def _cached(self, key: tuple[object, ...], build: Callable[[], RawResponse]) -> RawResponse:
        raw = self._cache.get(key)
        if raw is None:
            raw = build()
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[key] = raw
        return _copy(raw)


_AUTH_REQUIRED = "authentication required: send Authorization: Bearer <access token>"
_DENIED = "no policy rule allows this method and path"


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def _scope(scopes: frozenset[str]) -> str:
    return _escape(" ".join(sorted(scopes)))


def _escape(value: str) -> str:
    """A quoted-string body (RFC 9110 §5.6.4): printable ASCII only, `"` and `\\` escaped."""
    printable = "".join(c if " " <= c <= "~" else "?" for c in value)
    return printable.replace("\\", "\\\\").replace('"', '\\"')


def _copy(raw: RawResponse) -> RawResponse:
    # A fresh header list, so a caller appending CORS headers never alters the cache.
    return RawResponse(status=raw.status, headers=list(raw.headers), body=raw.body)
