"""The composition root: every part of the gateway is built and wired here, once.

Requests are dispatched by path before any framework runs: the authorization server's
routes go to its Starlette app, `/healthz` is answered here, and everything else goes
straight to the proxy, so the hot path pays for no router it does not need.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import Receive, Scope, Send

from gateway.auth import Authenticator, Challenges
from gateway.oauth import keys
from gateway.oauth.server import (
    AuthorizationServer,
    ClientResolver,
    Store,
    build_authorization_server,
    is_authorization_path,
)
from gateway.oauth.tokens import AccessToken, TokenService
from gateway.people.session import Sessions
from gateway.policy import load_policy
from gateway.proxy import ProxyApp
from gateway.settings import Settings
from gateway.tools import ToolCatalog, ToolLister, ToolRefresher

log = logging.getLogger("gateway")

JSON = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]


@dataclass
class Gateway:
    """The ASGI application the server runs."""

    authorization: AuthorizationServer | None
    proxy: ProxyApp
    tools: ToolRefresher | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await send({"type": "websocket.close", "code": 1003})

    def proxies(self, path: str) -> bool:
        """Whether a request for `path` (percent-decoded) goes to the proxy. The server
        protocol's fast path asks this too, so both dispatch by one rule."""
        return not is_authorization_path(path) and path != "/healthz"

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if self.proxies(path):
            await self.proxy(scope, receive, send)
        elif is_authorization_path(path):
            if self.authorization is None:
                await _json(send, 404, {"error": "not_found", "error_description": _OFF})
                return
            await self.authorization.app(scope, receive, send)
        else:
            await _json(send, 200, {"status": "ok"})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.error("start-up failed: %s", exc or type(exc).__name__)
                    log.debug("start-up failure", exc_info=exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        if self.authorization is not None:
            await self.authorization.startup()
        if self.tools is not None:
            await self.tools.start()

    async def shutdown(self) -> None:
        if self.tools is not None:
            await self.tools.aclose()
        await self.proxy.aclose()
        if self.authorization is not None:
            await self.authorization.shutdown()


_OFF = "OAuth endpoints are disabled (MCP_OAUTH_ENABLED=false)"


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    ring: keys.KeyRing | None = None,
    client_resolver: ClientResolver | None = None,
    clock: Callable[[], float] = time.time,
) -> Gateway:
    tokens = _token_service(settings, ring, clock) if settings.oauth_enabled else None
    authorization = None
    if tokens is not None:
        authorization = build_authorization_server(
            settings, tokens=tokens, store=store, client_resolver=client_resolver, clock=clock
        )
    authenticator = Authenticator(
        tokens=tokens,
        resource=settings.resource,
        api_key=settings.api_key,
        is_revoked=_revocation_check(authorization),
    )
    catalog = ToolCatalog()
    proxy = ProxyApp(
        settings,
        authenticator=authenticator,
        challenges=Challenges(f"{settings.issuer}/.well-known/oauth-protected-resource/mcp"),
        policy=load_policy(settings, catalog),
        sessions=_sessions(authorization),
    )
    return Gateway(authorization, proxy, _tool_refresher(settings, catalog))


def _tool_refresher(settings: Settings, catalog: ToolCatalog) -> ToolRefresher:
    """The upstream's tool annotations (gateway.tools), read with the upstream key."""
    lister = ToolLister(
        settings.upstream,
        api_key=settings.upstream_api_key,
        timeout=min(settings.upstream_header_timeout, 10.0),
    )
    return ToolRefresher(catalog, lister, refresh=settings.tools_refresh)


def _sessions(authorization: AuthorizationServer | None) -> Sessions | None:
    """Browser sessions of signed-in people (gateway.people), when sign-in is on."""
    people = authorization.context.people if authorization and authorization.context else None
    return people.sessions if people is not None else None


def _token_service(
    settings: Settings, ring: keys.KeyRing | None, clock: Callable[[], float]
) -> TokenService:
    if ring is None:
        ring = (
            keys.hs256_ring(settings.secret_key)
            if settings.secret_key
            else keys.load_or_create(settings.state_dir / "keys")
        )
    return TokenService(ring, issuer=settings.issuer, ttl=settings.access_token_ttl, clock=clock)


def _revocation_check(
    authorization: AuthorizationServer | None,
) -> Callable[[AccessToken], bool]:
    if authorization is None:
        return lambda _token: False
    return authorization.revocations.is_revoked


async def _json(send: Send, status: int, body: dict[str, str]) -> None:
    payload = json.dumps(body).encode()
    headers = [*JSON, (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
