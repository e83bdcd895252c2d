"""`POST /oauth/introspect` (RFC 7662, PROTOCOL T7).

RFC 7662 §4: the endpoint must not let any client probe any token. Callers are the
operator: `MCP_API_KEY` as a Bearer token, or the credentials of a confidential client
registered with an operator credential (`Client.trusted`). Other clients get 403, bad
credentials 401. An inactive token is exactly `{"active": false}`.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import NO_STORE, AccessDenied, InvalidClient
from gateway.oauth.context import Context
from gateway.oauth.dcr import bearer, same_secret
from gateway.oauth.revocation import find_access, find_refresh
from gateway.oauth.revoke import required_token

INACTIVE: dict[str, object] = {"active": False}


@dataclass
class IntrospectHandler:
    ctx: Context

    async def __call__(self, request: Request) -> Response:
        await self.ctx.limit("introspect", request)
        form = await self.ctx.form(request)
        await self._authorise(request, form)
        body = await self.describe(required_token(form))
        return JSONResponse(body, headers=NO_STORE)

    async def _authorise(self, request: Request, form: dict[str, str]) -> None:
        scheme = request.headers.get("authorization", "").partition(" ")[0]
        if scheme.lower() == "bearer":
            if same_secret(bearer(request), self.ctx.settings.api_key):
                return
            raise InvalidClient("introspection needs the API key or client credentials")
        client = await self.ctx.authenticate(request, form)
        if client.is_public:
            raise InvalidClient("public clients may not introspect tokens")
        if not client.trusted:
            raise AccessDenied("only clients registered by the operator may introspect tokens")

    async def describe(self, token: str) -> dict[str, object]:
        settings = self.ctx.settings
        access = find_access(self.ctx.tokens, token, settings.resource)
        if access is not None:
            if self.ctx.revocations.is_revoked(access) or access.expires_at <= self.ctx.clock():
                return INACTIVE
            return {
                "active": True,
                "token_type": "Bearer",
                "scope": access.scope,
                "client_id": access.client_id,
                "sub": access.subject,
                "aud": access.audience,
                "iss": settings.issuer,
                "iat": access.issued_at,
                "exp": access.expires_at,
                "jti": access.jti,
            }
        refresh = await find_refresh(self.ctx.store, token, self.ctx.clock())
        if refresh is None:
            return INACTIVE
        return {
            "active": True,
            "scope": refresh.scope,
            "client_id": refresh.client_id,
            "sub": refresh.subject,
            "aud": refresh.resource,
            "iss": settings.issuer,
            "iat": int(refresh.issued_at),
            "exp": int(refresh.expires_at),
        }
