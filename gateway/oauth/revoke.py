"""`POST /oauth/revoke` (RFC 7009, PROTOCOL T7): 200 even for unknown tokens."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import InvalidRequest
from gateway.oauth.audit import audit
from gateway.oauth.client_auth import ClientAuthenticator
from gateway.oauth.events import TokenEvents, no_events
from gateway.oauth.forms import read_form
from gateway.oauth.revocation import Revoker, find_access, find_refresh
from gateway.oauth.throttle import PeerLimit
from gateway.oauth.tokens import TokenService
from gateway.store.base import RefreshStore


def required_token(form: dict[str, str]) -> str:
    token = form.get("token")
    if token is None:
        raise InvalidRequest("the token parameter is required")
    return token


@dataclass(frozen=True)
class RevokeHandler:
    limit: PeerLimit
    max_body: int
    authenticate: ClientAuthenticator
    refresh_tokens: RefreshStore
    tokens: TokenService
    revoker: Revoker
    resource: str
    on_token: TokenEvents = no_events
    clock: Callable[[], float] = time.time

    async def __call__(self, request: Request) -> Response:
        await self.limit("revoke", request)
        form = await read_form(request, self.max_body)
        client = await self.authenticate(request, form)
        token = required_token(form)
        refresh = await find_refresh(self.refresh_tokens, token, self.clock())
        if refresh is not None and refresh.client_id == client.client_id:
            audit.info("oauth refresh token revoked by client=%s", client.client_id)
            await self.revoker.revoke_family(refresh.family)
            self.on_token("revoked", "refresh_token")
        access = None if refresh else find_access(self.tokens, token, self.resource)
        # RFC 7009 §2.1: a token of another client is left alone, and the answer is the same.
        if access is not None and access.client_id == client.client_id:
            audit.info("oauth access token revoked by client=%s", client.client_id)
            await self.revoker.revoke_access(access)
            self.on_token("revoked", "access_token")
        return Response(status_code=200, headers={"Cache-Control": "no-store"})
