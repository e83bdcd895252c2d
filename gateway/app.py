"""The composition root: every part of the gateway is built and wired here, once.

Requests are dispatched by path before any framework runs: the authorization server's
routes go to its Starlette app, `/healthz` is answered here, and everything else goes
straight to the proxy, so the hot path pays for no router it does not need.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.auth import Authenticator, Challenges
from gateway.authserver import (
    AuthorizationServer,
    ClientResolver,
    Store,
    build_authorization_server,
    is_authorization_path,
)
from gateway.errors import NotFound, render
from gateway.http_protocol import ProxyHandler
from gateway.oauth import keys
from gateway.oauth.tokens import AccessToken, TokenService
from gateway.observability.exchange import (
    ObservedApp,
    ObservedAuthenticator,
    ObservedProxy,
    Observer,
    observed_forwarder,
)
from gateway.observability.metrics import Metrics
from gateway.observability.readiness import Readiness
from gateway.observability.requestlog import LineSink, RequestLog
from gateway.people.session import Sessions
from gateway.policy import load_policy
from gateway.proxy import ProxyApp
from gateway.proxy.forward import Upstream
from gateway.proxy.replies import send_answer
from gateway.settings import Settings
from gateway.tools import ToolCatalog, ToolLister, ToolRefresher

log = logging.getLogger("gateway")

JSON = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
]
NOSNIFF = (b"x-content-type-options", b"nosniff")


@dataclass
class Gateway:
    """The ASGI application the server runs."""

    authorization: AuthorizationServer | None
    proxy: ProxyApp
    tools: ToolRefresher | None = None
    # Operations: request records (metrics, request log, drain) and /readyz.
    observer: Observer | None = None
    readiness: Readiness | None = None

    def asgi(self) -> ASGIApp:
        """What the server runs on its ASGI path: this app, observed."""
        return self if self.observer is None else ObservedApp(self, self.observer)

    def fast_handler(self) -> ProxyHandler:
        """What the server protocol's fast path calls: the proxy, observed."""
        return self.proxy if self.observer is None else ObservedProxy(self.proxy, self.observer)

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
        return not is_authorization_path(path) and path != "/healthz" and path != "/readyz"

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if self.proxies(path):
            await self.proxy(scope, receive, send)
        elif is_authorization_path(path):
            if self.authorization is None:
                await send_answer(send, render(NotFound(_OFF)))
                return
            await self.authorization.app(scope, receive, _nosniff(send))
        elif path == "/readyz" and self.readiness is not None:
            verdict = await self.readiness.check()
            if verdict.ready:
                await _json(send, 200, {"status": "ready"})
            else:
                await _json(send, 503, {"status": "unavailable", "reason": verdict.reason})
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
        if self.observer is not None and self.observer.log is not None:
            self.observer.log.sink.flush()


_OFF = "OAuth endpoints are disabled (MCP_OAUTH_ENABLED=false)"


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    ring: keys.KeyRing | None = None,
    client_resolver: ClientResolver | None = None,
    clock: Callable[[], float] = time.time,
    metrics: Metrics | None = None,
    request_sink: LineSink | None = None,
    upstream: Upstream | None = None,
) -> Gateway:
    """`upstream`: the client the proxy forwards through; by default the pooled HTTP/1.1
    client for `settings.upstream` (`gateway.proxy.inprocess.ASGIUpstream` serves an
    ASGI application in this process instead)."""
    if metrics is None and settings.metrics_addr is not None:
        metrics = Metrics()
    tokens = _token_service(settings, ring, clock) if settings.oauth_enabled else None
    authorization = None
    if tokens is not None:
        authorization = build_authorization_server(
            settings,
            tokens=tokens,
            store=store,
            client_resolver=client_resolver,
            clock=clock,
            metrics=metrics,
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
        upstream=upstream,
    )
    observer = _observer(settings, metrics, request_sink)
    if observer.metrics is not None or observer.log is not None:
        proxy.forward = observed_forwarder(proxy.forward, observer)
    if metrics is not None:
        proxy.authenticator = ObservedAuthenticator(authenticator, metrics)
    return Gateway(
        authorization,
        proxy,
        _tool_refresher(settings, catalog),
        observer=observer,
        readiness=_readiness(settings, authorization, observer),
    )


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
    people = authorization.people if authorization is not None else None
    return people.sessions if people is not None else None


def _observer(settings: Settings, metrics: Metrics | None, sink: LineSink | None) -> Observer:
    log = None
    if settings.request_log:
        secrets = (settings.api_key or "", settings.dcr_registration_key or "")
        log = RequestLog(settings.log_format, sink or LineSink(), secrets=secrets)
    return Observer(metrics, log)


def _readiness(
    settings: Settings, authorization: AuthorizationServer | None, observer: Observer
) -> Readiness:
    origin = urlsplit(settings.upstream)
    upstream = (origin.hostname or "127.0.0.1", origin.port or 80)
    if authorization is None:
        return Readiness(upstream=upstream, store_check=None, draining=lambda: observer.draining)
    store, cache = authorization.store, authorization.revocations

    async def store_answers() -> None:
        await store.get_client("readyz-probe")

    def stale() -> bool:
        limit = cache.max_staleness
        return limit is not None and cache.monotonic() - cache.last_refresh > limit

    return Readiness(
        upstream=upstream, store_check=store_answers, stale=stale,
        draining=lambda: observer.draining,
    )  # fmt: skip


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


def _nosniff(send: Send) -> Send:
    """Adds `X-Content-Type-Options: nosniff` to a JSON response that lacks it."""

    async def sending(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            names = {bytes(name).lower(): bytes(value) for name, value in headers}
            media = names.get(b"content-type", b"").split(b";")[0].strip().lower()
            json_type = media == b"application/json" or media.endswith(b"+json")
            if json_type and b"x-content-type-options" not in names:
                message = {**message, "headers": [*headers, NOSNIFF]}
        await send(message)

    return sending
