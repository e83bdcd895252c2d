"""What every authorization-server handler needs, built once by the server factory."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from starlette.requests import Request

from gateway.models import Client
from gateway.net import Network
from gateway.oauth import client_auth
from gateway.oauth.forms import read_form
from gateway.oauth.revocation import RevocationCache, Revoker
from gateway.oauth.tokens import TokenService
from gateway.ratelimit import RateLimiter, client_address
from gateway.settings import Settings
from gateway.store.base import Store

if TYPE_CHECKING:
    from gateway.people.flow import People


class ClientResolver(Protocol):
    """Resolves a `client_id` that is an https URL (Client ID Metadata Document)."""

    async def resolve(self, client_id: str) -> Client: ...


@dataclass
class Context:
    settings: Settings
    store: Store
    tokens: TokenService
    revocations: RevocationCache
    revoker: Revoker
    limiter: RateLimiter
    resolver: ClientResolver | None = None
    clock: Callable[[], float] = field(default=time.time)
    trusted_proxies: tuple[Network, ...] = ()
    # Sign-in through an identity provider (MCP_OAUTH_CONSENT=oidc|github).
    people: People | None = None
    # Operations: told of every token issued, refreshed or revoked (event, grant).
    on_token: Callable[[str, str], None] | None = None

    def token_event(self, event: str, grant: str) -> None:
        if self.on_token is not None:
            self.on_token(event, grant)

    async def find_client(self, client_id: str) -> Client | None:
        """A registered client, or one described by its metadata document URL."""
        if self.resolver is not None and client_id.startswith("https://"):
            return await self.resolver.resolve(client_id)
        client = await self.store.get_client(client_id)
        if client is not None and client.source == "cimd":
            # A document stored while CIMD was on (gateway.oauth.client_metadata) is a
            # cache of the resolver's, not a registration: with CIMD off it is no one.
            return None
        return client

    async def form(self, request: Request) -> dict[str, str]:
        return await read_form(request, self.settings.max_form_bytes)

    async def authenticate(self, request: Request, form: dict[str, str]) -> Client:
        return await client_auth.authenticate_client(
            self.find_client, request.headers.get("authorization"), form, self.clock()
        )

    async def limit(self, bucket: str, request: Request) -> None:
        peer = request.client.host if request.client else "unknown"
        forwarded = request.headers.getlist("x-forwarded-for")
        await self.limiter.check(bucket, client_address(peer, forwarded, self.trusted_proxies))
