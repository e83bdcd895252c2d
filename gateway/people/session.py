"""Browser sessions: a `__Host-` cookie holding a short signed token, checked without I/O.

The cookie's value is a JWT of the gateway's own key ring whose audience is
`{issuer}/oauth/session` (so it is never accepted as a bearer token for the MCP
resource), carrying the person (sub, email, name, groups) and their scopes. It is
checked like an access token (signature, issuer, audience, expiry) and against the
revocation cache, so logout (which revokes its `jti`) ends it on every replica. A new
session, with a new id, is issued at every sign-in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.auth import principal_of
from gateway.errors import OAuthError
from gateway.oauth.tokens import AccessToken, Person, TokenService
from gateway.principal import Principal

SESSION_COOKIE = "__Host-mgw-session"
SIGNIN_COOKIE = "__Host-mgw-signin"
SESSION_CLIENT = "browser-session"
MAX_COOKIE_CHARS = 4096
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def cookie_value(header: str | bytes | None, name: str) -> str | None:
    """One cookie from a Cookie header (RFC 6265 §5.4), the first of that name."""
    if not header:
        return None
    text = header.decode("latin-1") if isinstance(header, bytes) else header
    if len(text) > 4 * MAX_COOKIE_CHARS:
        return None
    for part in text.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"') or None
    return None


def set_cookie(name: str, value: str, max_age: int, *, path: str = "/") -> str:
    """A `__Host-` cookie: Secure, no Domain, Path=/ (RFC 6265bis §4.1.3.2)."""
    return f"{name}={value}; Path={path}; Max-Age={max_age}; Secure; HttpOnly; SameSite=Lax"


def clear_cookie(name: str) -> str:
    return f"{name}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax"


class CrossOriginSession(OAuthError):
    status_code = 403
    error = "access_denied"


@dataclass
class Sessions:
    tokens: TokenService
    issuer: str
    ttl: int
    is_revoked: Callable[[AccessToken], bool]
    _principals: dict[str, tuple[AccessToken, Principal]] = field(default_factory=dict)

    @property
    def audience(self) -> str:
        return f"{self.issuer}/oauth/session"

    def issue(self, subject: str, person: Person, scopes: frozenset[str]) -> tuple[str, str]:
        """(cookie value, Set-Cookie header) of a new session."""
        issued = self.tokens.issue(
            subject=subject,
            client_id=SESSION_CLIENT,
            scopes=scopes,
            audience=self.audience,
            ttl=self.ttl,
            person=person,
        )
        return issued.token, set_cookie(SESSION_COOKIE, issued.token, self.ttl)

    def read(self, cookie_header: str | bytes | None) -> AccessToken | None:
        """The session a Cookie header carries; None when absent, invalid or revoked."""
        value = cookie_value(cookie_header, SESSION_COOKIE)
        if value is None or len(value) > MAX_COOKIE_CHARS:
            return None
        try:
            claims = self.tokens.verify(value, audience=self.audience)
        except (OAuthError, ValueError, TypeError, KeyError):
            return None
        if claims.client_id != SESSION_CLIENT:
            return None
        try:
            if self.is_revoked(claims):
                return None
        except Exception:
            return None  # fail closed
        return claims

    def for_request(
        self, cookie_header: bytes | None, method: str, origin: bytes | None
    ) -> Principal | None:
        """The session authorising a proxied browser route, or None; an unsafe method
        with a session needs an `Origin` equal to the issuer (CSRF)."""
        claims = self.read(cookie_header)
        if claims is None:
            return None
        if method not in SAFE_METHODS and (
            origin is None or origin.decode("latin-1") != self.issuer
        ):
            raise CrossOriginSession(
                "a request with a session cookie and an unsafe method needs the gateway's "
                "own Origin"
            )
        known = self._principals.get(claims.jti)
        if known is not None and known[0] is claims:
            return known[1]
        principal = principal_of(claims, "session")
        if len(self._principals) >= 10_000:
            self._principals.clear()
        self._principals[claims.jti] = (claims, principal)
        return principal
