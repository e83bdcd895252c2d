"""`POST /oauth/introspect` (RFC 7662, PROTOCOL T7).

RFC 7662 §4: the endpoint must not let any client probe any token. Callers are the
operator: `MCP_API_KEY` as a Bearer token, or the credentials of a confidential client
registered with an operator credential (`Client.trusted`). Other clients get 403, bad
credentials 401. An inactive token is exactly `{"active": false}`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import NO_STORE, AccessDenied, InvalidClient
from gateway.oauth.client_auth import ClientAuthenticator
from gateway.oauth.dcr import bearer, same_secret
from gateway.oauth.forms import read_form
from gateway.oauth.revocation import RevocationCache, find_access, find_refresh
from gateway.oauth.revoke import required_token
from gateway.oauth.throttle import PeerLimit
from gateway.oauth.tokens import TokenService
from gateway.store.base import RefreshStore

INACTIVE: dict[str, object] = {"active": False}


@dataclass(frozen=True)
class IntrospectHandler:
    limit: PeerLimit
    max_body: int
    authenticate: ClientAuthenticator
    api_key: str | None
    tokens: TokenService
    revocations: RevocationCache
    refresh_tokens: RefreshStore
    resource: str
    issuer: str
    clock: Callable[[], float] = time.time

    async def __call__(self, request: Request) -> Response:
        await self.limit("introspect", request)
        form = await read_form(request, self.max_body)
        await self._authorise(request, form)
        body = await self.describe(required_token(form))
        return JSONResponse(body, headers=NO_STORE)

    async def _authorise(self, request: Request, form: dict[str, str]) -> None:
        scheme = request.headers.get("authorization", "").partition(" ")[0]
        if scheme.lower() == "bearer":
            if same_secret(bearer(request), self.api_key):
                return
            raise InvalidClient("introspection needs the API key or client credentials")
        client = await self.authenticate(request, form)
        if client.is_public:
            raise InvalidClient("public clients may not introspect tokens")
        if not client.trusted:
            raise AccessDenied("only clients registered by the operator may introspect tokens")

    async def describe(self, token: str) -> dict[str, object]:
        access = find_access(self.tokens, token, self.resource)
        if access is not None:
            if self.revocations.is_revoked(access) or access.expires_at <= self.clock():
                return INACTIVE
            return {
                "active": True,
                "token_type": "Bearer",
                "scope": access.scope,
                "client_id": access.client_id,
                "sub": access.subject,
                "aud": access.audience,
                "iss": self.issuer,
                "iat": access.issued_at,
                "exp": access.expires_at,
                "jti": access.jti,
            }
        refresh = await find_refresh(self.refresh_tokens, token, self.clock())
        if refresh is None:
            return INACTIVE
        return {
            "active": True,
            "scope": refresh.scope,
            "client_id": refresh.client_id,
            "sub": refresh.subject,
            "aud": refresh.resource,
            "iss": self.issuer,
            "iat": int(refresh.issued_at),
            "exp": int(refresh.expires_at),
        }
