"""The authorization server: routes, wiring and background tasks (composition root of
everything under `/.well-known/*` and `/oauth/*`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from gateway.errors import (
    GatewayError,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    ServerError,
    TemporarilyUnavailable,
    response,
)
from gateway.net import parse_networks
from gateway.oauth import metadata
from gateway.oauth.audit import log_refusal
from gateway.oauth.authorize_http import Approval, AuthorizeHandler, ConsentHandler
from gateway.oauth.client_auth import ClientAuthenticator
from gateway.oauth.clients import ClientFinder, ClientResolver
from gateway.oauth.cors import PublicCorsMiddleware
from gateway.oauth.dcr import ClientConfigurationHandler, ClientInfoHandler, RegisterHandler
from gateway.oauth.events import TokenEvents, no_events
from gateway.oauth.introspection import IntrospectHandler
from gateway.oauth.revocation import RevocationCache, Revoker, max_staleness
from gateway.oauth.revoke import RevokeHandler
from gateway.oauth.throttle import PeerLimit
from gateway.oauth.token import (
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    Grant,
    RefreshTokenGrant,
    TokenHandler,
)
from gateway.oauth.tokens import TokenService
from gateway.observability.instrument import MeasuredResolver, measured_store
from gateway.observability.metrics import Metrics
from gateway.people.provider import IdentityProvider
from gateway.ratelimit import RateLimiter
from gateway.settings import Settings
from gateway.store.base import Store, StoreUnavailable
from gateway.store.factory import open_store

if TYPE_CHECKING:
    from gateway.people.flow import People

__all__ = [
    "AuthorizationServer",
    "ClientResolver",
    "Store",
    "build_authorization_server",
    "is_authorization_path",
]

logger = logging.getLogger("gateway.oauth")
# Revocations made by another process (a replica, a worker, the operator's CLI) reach
# this one within this interval: under the 1 s the operator's CLI promises.
REVOCATION_REFRESH_SECONDS = 0.5
MAINTENANCE_SECONDS = 60.0
# Registered clients that never obtained a token are dropped after this long (R5).
UNUSED_CLIENT_TTL = 7 * 24 * 3600
ALIASES = frozenset({"/authorize", "/token", "/register"})
CORS_PATHS = frozenset(
    {"/oauth/token", "/token", "/oauth/register", "/register", "/oauth/revoke", "/oauth/jwks"}
)


def is_authorization_path(path: str) -> bool:
    return path.startswith(("/.well-known/", "/oauth/")) or path == "/oauth" or path in ALIASES


def _public_cors(path: str) -> bool:
    return path.startswith("/.well-known/") or path in CORS_PATHS


@dataclass
class AuthorizationServer:
    app: ASGIApp
    revocations: RevocationCache
    store: Store
    clock: Callable[[], float] = time.time
    # Sign-in through an identity provider (MCP_OAUTH_CONSENT=oidc|github), else None.
    people: People | None = None
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def startup(self) -> None:
        await self.store.open()
        await self.revocations.refresh()
        self._tasks = [
            asyncio.create_task(self.revocations.run(REVOCATION_REFRESH_SECONDS)),
            asyncio.create_task(self._maintain()),
        ]

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for close in self.closers:
            await close()
        await self.store.close()

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(MAINTENANCE_SECONDS)
            try:
                now = self.clock()
                await self.store.prune(now)
                await self.store.prune_unused_clients(now - UNUSED_CLIENT_TTL)
            except Exception:
                logger.exception("pruning OAuth state failed")


def build_authorization_server(
    settings: Settings,
    *,
    tokens: TokenService,
    store: Store | None = None,
    client_resolver: ClientResolver | None = None,
    clock: Callable[[], float] = time.time,
    metrics: Metrics | None = None,
) -> AuthorizationServer:
    """The one place the authorization server is wired: each handler gets what it uses,
    and nothing else."""
    if settings.consent == "auto" and not settings.issuer_is_loopback:
        logger.warning(
            "MCP_OAUTH_CONSENT=auto on a non-loopback issuer (%s): every authorization "
            "request is approved without asking anyone, so anyone who can reach it can "
            "get tokens",
            settings.issuer,
        )
    store = store if store is not None else open_store(settings.storage)
    closers: list[Callable[[], Awaitable[None]]] = []
    if client_resolver is None and settings.cimd_enabled:
        client_resolver, close = _default_resolver(settings, clock, store)
        closers.append(close)
    if metrics is not None:
        store = measured_store(store, metrics)
        if client_resolver is not None:
            client_resolver = MeasuredResolver(client_resolver, metrics)
    cache = RevocationCache(
        store, clock=clock, max_staleness=max_staleness(REVOCATION_REFRESH_SECONDS)
    )
    find_client = ClientFinder(store, client_resolver if settings.cimd_enabled else None)
    shared = _Shared(
        store=store,
        tokens=tokens,
        revocations=cache,
        revoker=Revoker(store, cache, access_ttl=tokens.ttl, clock=clock),
        limit=PeerLimit(
            RateLimiter(store, settings.rate_limit_per_minute, clock=clock),
            parse_networks(settings.trusted_proxies),
        ),
        find_client=find_client,
        authenticate=ClientAuthenticator(find_client, clock),
        approval=Approval(store, settings.issuer, settings.code_ttl, clock),
        on_token=metrics.token if metrics is not None else no_events,
        clock=clock,
    )
    people = None
    if settings.consent in ("oidc", "github"):
        people, close = _people(settings, shared)
        closers.append(close)
    app = Starlette(
        routes=metadata_routes(settings, tokens, cimd=shared.find_client.resolver is not None)
        + routes(settings, shared, people)
        + people_routes(people),
        exception_handlers={
            GatewayError: _gateway_error,
            InternalError: _server_error,
            StoreUnavailable: _store_unavailable,
            HTTPException: _http_error,
            ClientDisconnect: _client_gone,
            Exception: _server_error,
        },
    )
    return AuthorizationServer(
        app=PublicCorsMiddleware(app, _public_cors),
        revocations=cache,
        store=store,
        clock=clock,
        people=people,
        closers=closers,
    )


@dataclass(frozen=True)
class _Shared:
    """The parts several handlers use, built once per server; handlers are given the
    ones they use, never this record."""

    store: Store
    tokens: TokenService
    revocations: RevocationCache
    revoker: Revoker
    limit: PeerLimit
    find_client: ClientFinder
    authenticate: ClientAuthenticator
    approval: Approval
    on_token: TokenEvents
    clock: Callable[[], float]


def metadata_routes(settings: Settings, tokens: TokenService, *, cimd: bool) -> list[BaseRoute]:
    """The discovery documents and the JWKS: fixed bytes, built once."""
    algorithm = tokens.ring.active.algorithm
    as_doc = _json(metadata.authorization_server_metadata(settings, cimd=cimd))
    oidc_doc = _json(metadata.openid_configuration(settings, cimd=cimd, algorithm=algorithm))
    prm_doc = _json(metadata.protected_resource_metadata(settings))
    root_prm_doc = _json(metadata.protected_resource_metadata(settings, root=True))
    jwks = _json(tokens.ring.jwks())
    get = ["GET"]
    return [
        Route("/.well-known/oauth-authorization-server", as_doc, methods=get),
        Route("/.well-known/oauth-authorization-server/mcp", as_doc, methods=get),
        Route("/.well-known/openid-configuration", oidc_doc, methods=get),
        Route("/.well-known/openid-configuration/mcp", oidc_doc, methods=get),
        Route("/.well-known/oauth-protected-resource", root_prm_doc, methods=get),
        Route("/.well-known/oauth-protected-resource/mcp", prm_doc, methods=get),
        Route(metadata.JWKS_PATH, jwks, methods=get),
        Route("/.well-known/jwks.json", jwks, methods=get),
    ]


def grants(settings: Settings, shared: _Shared, people: People | None) -> dict[str, Grant]:
    """The token endpoint's grant types, by `grant_type` (docs/architecture.md: where to
    add one)."""
    s = shared
    resource, issuer = settings.resource, settings.issuer
    return {
        "authorization_code": AuthorizationCodeGrant(
            s.store,
            s.revoker,
            s.tokens,
            resource,
            issuer,
            refresh_ttl=settings.refresh_token_ttl,
            people=people,
            clock=s.clock,
        ),
        "refresh_token": RefreshTokenGrant(
            s.store,
            s.revoker,
            s.revocations,
            s.tokens,
            resource,
            issuer,
            refresh_ttl=settings.refresh_token_ttl,
            grace=settings.refresh_grace_seconds,
            people=people,
            clock=s.clock,
        ),
        "client_credentials": ClientCredentialsGrant(s.tokens, resource, issuer),
    }


def routes(settings: Settings, shared: _Shared, people: People | None) -> list[BaseRoute]:
    s = shared
    body = settings.max_form_bytes
    # Bound methods: Starlette treats a callable instance as a raw ASGI app.
    register = RegisterHandler(
        s.limit,
        s.store,
        s.revoker,
        settings.issuer,
        api_key=settings.api_key,
        registration_key=settings.dcr_registration_key,
        allowed_schemes=settings.allowed_redirect_schemes,
        max_body=body,
        max_clients=settings.max_clients,
        clock=s.clock,
    ).__call__
    configuration = ClientConfigurationHandler(
        s.limit,
        s.store,
        s.revoker,
        settings.issuer,
        allowed_schemes=settings.allowed_redirect_schemes,
        max_body=body,
    ).__call__
    info = ClientInfoHandler(s.limit, s.store, api_key=settings.api_key).__call__
    authorize = AuthorizeHandler(
        s.limit,
        s.find_client,
        s.store,
        s.approval,
        resource=settings.resource,
        issuer=settings.issuer,
        code_ttl=settings.code_ttl,
        auto=settings.consent == "auto",
        sign_in=people,
        clock=s.clock,
    ).__call__
    consent = ConsentHandler(
        s.limit,
        body,
        s.store,
        s.find_client,
        s.approval,
        api_key=settings.api_key,
        sign_in=people,
        clock=s.clock,
    ).__call__
    token = TokenHandler(
        s.limit,
        body,
        s.authenticate,
        grants(settings, s, people),
        s.revocations,
        s.store,
        on_token=s.on_token,
        clock=s.clock,
    ).__call__
    revoke = RevokeHandler(
        s.limit,
        body,
        s.authenticate,
        s.store,
        s.tokens,
        s.revoker,
        resource=settings.resource,
        on_token=s.on_token,
        clock=s.clock,
    ).__call__
    introspect = IntrospectHandler(
        s.limit,
        body,
        s.authenticate,
        api_key=settings.api_key,
        tokens=s.tokens,
        revocations=s.revocations,
        refresh_tokens=s.store,
        resource=settings.resource,
        issuer=settings.issuer,
        clock=s.clock,
    ).__call__
    return [
        Route("/oauth/register", register, methods=["POST"]),
        Route("/register", register, methods=["POST"]),
        Route("/oauth/register/{client_id}", configuration, methods=["GET", "PUT", "DELETE"]),
        Route("/oauth/clients/{client_id}", info, methods=["GET"]),
        Route("/oauth/authorize", authorize, methods=["GET"]),
        Route("/authorize", authorize, methods=["GET"]),
        Route("/oauth/authorize/consent", consent, methods=["POST"]),
        Route("/oauth/token", token, methods=["POST"]),
        Route("/token", token, methods=["POST"]),
        Route("/oauth/revoke", revoke, methods=["POST"]),
        Route("/oauth/introspect", introspect, methods=["POST"]),
    ]


def _people(settings: Settings, shared: _Shared) -> tuple[People, Callable[[], Awaitable[None]]]:
    """Sign-in through an identity provider (gateway.people), and its closer."""
    from gateway.people.flow import People
    from gateway.people.identity import Admission
    from gateway.people.session import Sessions

    clock = shared.clock
    provider: IdentityProvider
    if settings.consent == "github":
        from gateway.people.github import GithubProvider

        provider = GithubProvider(settings)
    else:
        from gateway.people.oidc import OidcProvider

        provider = OidcProvider(settings, clock=clock)
    from gateway.policy import load_policy

    admission = Admission.from_settings(settings, load_policy(settings).people)
    if admission.open:
        logger.warning(
            "MCP_OAUTH_CONSENT=%s with no MCP_OAUTH_ALLOWED_* rule: everyone %s "
            "authenticates may sign in",
            settings.consent,
            provider.label,
        )
    sessions = Sessions(
        shared.tokens, settings.issuer, settings.session_ttl, shared.revocations.is_revoked
    )
    people = People(
        provider,
        admission,
        sessions,
        records=shared.store,
        find_client=shared.find_client,
        revoker=shared.revoker,
        approval=shared.approval,
        limit=shared.limit,
        max_body=settings.max_form_bytes,
        issuer=settings.issuer,
        code_ttl=settings.code_ttl,
        provider_timeout=settings.provider_timeout,
        remember_ttl=settings.consent_remember_ttl,
        refresh_ttl=settings.refresh_token_ttl,
        clock=clock,
    )
    return people, provider.aclose


def people_routes(people: People | None) -> list[BaseRoute]:
    if people is None:
        return []
    return [
        Route("/oauth/callback", people.callback, methods=["GET"]),
        Route("/oauth/login", people.login, methods=["GET"]),
        Route("/oauth/logout", people.logout, methods=["GET", "POST"]),
        Route("/oauth/apps", people.apps, methods=["GET"]),
        Route("/oauth/apps/revoke", people.revoke_app, methods=["POST"]),
    ]


def _json(document: Any) -> Callable[[Request], Awaitable[Response]]:
    body = json.dumps(document, separators=(",", ":")).encode()

    async def endpoint(request: Request) -> Response:
        return Response(body, media_type="application/json")

    return endpoint


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    log_refusal(request, exc)
    return response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no route, wrong method) as our errors."""
    assert isinstance(exc, HTTPException)
    kinds: dict[int, type[GatewayError]] = {404: NotFound, 405: MethodNotAllowed}
    error = kinds.get(exc.status_code, InvalidRequest)(exc.detail, headers=exc.headers)
    return response(error, status=exc.status_code)


async def _store_unavailable(request: Request, exc: Exception) -> Response:
    logger.error("oauth storage unavailable: %s", exc)
    unavailable = TemporarilyUnavailable(
        "the authorization server's storage is unavailable; try again shortly",
        headers={"Retry-After": "5"},
    )
    return response(unavailable)


async def _client_gone(request: Request, exc: Exception) -> Response:
    """The client went away mid-request (an aborted body): one line, no traceback; the
    answer is never delivered."""
    logger.info("client disconnected during %s %s", request.method, request.url.path)
    return Response(status_code=400)


async def _server_error(request: Request, exc: Exception) -> Response:
    logger.exception("unexpected error in the authorization server", exc_info=exc)
    return response(ServerError("internal error"))


def _default_resolver(
    settings: Settings, clock: Callable[[], float], store: Store
) -> tuple[ClientResolver, Callable[[], Awaitable[None]]]:
    from gateway.oauth.client_metadata import ClientMetadataResolver, load_supplied

    supplied = (
        load_supplied(settings.cimd_dir, settings.allowed_redirect_schemes)
        if settings.cimd_dir is not None
        else {}
    )
    if supplied:
        logger.info("client metadata documents supplied: %s", ", ".join(sorted(supplied)))

    verify: ssl.SSLContext | bool = True
    if settings.cimd_ca_file is not None:
        verify = ssl.create_default_context(cafile=str(settings.cimd_ca_file))
    resolver = ClientMetadataResolver(
        allow_private=settings.cimd_allow_private,
        allowed_redirect_schemes=settings.allowed_redirect_schemes,
        verify=verify,
        clock=clock,
        store=store,
        stale_seconds=settings.cimd_stale_seconds,
        supplied=supplied,
        max_stored=settings.max_clients,
    )
    return resolver, resolver.aclose
