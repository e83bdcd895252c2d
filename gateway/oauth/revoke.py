"""`POST /oauth/revoke` (RFC 7009, PROTOCOL T7): 200 even for unknown tokens."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import InvalidRequest
from gateway.oauth.audit import audit
from gateway.oauth.context import Context
from gateway.oauth.revocation import find_access, find_refresh


def required_token(form: dict[str, str]) -> str:
    token = form.get("token")
    if token is None:
        raise InvalidRequest("the token parameter is required")
    return token


@dataclass
class RevokeHandler:
    ctx: Context

    async def __call__(self, request: Request) -> Response:
        await self.ctx.limit("revoke", request)
        form = await self.ctx.form(request)
        client = await self.ctx.authenticate(request, form)
        token = required_token(form)
        refresh = await find_refresh(self.ctx.store, token, self.ctx.clock())
        if refresh is not None and refresh.client_id == client.client_id:
            audit.info("oauth refresh token revoked by client=%s", client.client_id)
            await self.ctx.revoker.revoke_family(refresh.family)
            self.ctx.token_event("revoked", "refresh_token")
        access = (
            None if refresh else find_access(self.ctx.tokens, token, self.ctx.settings.resource)
        )
        # RFC 7009 §2.1: a token of another client is left alone, and the answer is the same.
        if access is not None and access.client_id == client.client_id:
            audit.info("oauth access token revoked by client=%s", client.client_id)
            await self.ctx.revoker.revoke_access(access)
            self.ctx.token_event("revoked", "access_token")
        return Response(status_code=200, headers={"Cache-Control": "no-store"})
