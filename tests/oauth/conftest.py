from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from gateway.authserver import AuthorizationServer, build_authorization_server
from gateway.oauth.keys import hs256_ring, load_or_create
from gateway.oauth.tokens import TokenService
from gateway.settings import Settings
from gateway.store.base import Store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SqliteStore
from tests.clock import Clock
from tests.store.redis_server import redis_url, unique_prefix

__all__ = ["redis_url"]  # a fixture, re-exported for the Redis parametrisation

ISSUER = "https://gw.example:8443"
API_KEY = "operator-api-key-0123456789"
LOOPBACK_CB = "http://127.0.0.1:3000/callback"


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    made: Store
    if request.param == "redis":
        made = RedisStore(request.getfixturevalue("redis_url"), prefix=unique_prefix())
    else:
        made = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "oauth.db")
    await made.open()
    yield made
    await made.close()


@dataclass
class Harness:
    server: AuthorizationServer
    http: httpx.AsyncClient
    tokens: TokenService
    clock: Clock
    settings: Settings

    async def register(self, **metadata: Any) -> dict[str, Any]:
        response = await self.http.post("/oauth/register", json=metadata)
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def register_as_operator(self, **metadata: Any) -> dict[str, Any]:
        """A registration presenting MCP_API_KEY: may use client_credentials and admin."""
        response = await self.http.post(
            "/oauth/register", json=metadata, headers={"Authorization": f"Bearer {API_KEY}"}
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def public_client(self, **extra: Any) -> dict[str, Any]:
        return await self.register(
            client_name="Claude Code",
            redirect_uris=[LOOPBACK_CB],
            token_endpoint_auth_method="none",
            **extra,
        )

    async def authorize(self, client_id: str, **params: str) -> httpx.Response:
        query = {"response_type": "code", "client_id": client_id, "state": "st4te", **params}
        return await self.http.get("/oauth/authorize", params=query)

    async def code_for(self, client_id: str, **params: str) -> tuple[str, str]:
        """(code, verifier) from an auto-approved authorization with PKCE."""
        verifier = secrets.token_urlsafe(48)
        response = await self.authorize(
            client_id,
            redirect_uri=params.pop("redirect_uri", LOOPBACK_CB),
            code_challenge=pkce(verifier),
            code_challenge_method="S256",
            **params,
        )
        assert response.status_code == 302, response.text
        return query_of(response)["code"], verifier

    async def exchange(
        self, client_id: str, code: str, verifier: str, **extra: str
    ) -> httpx.Response:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": client_id,
            "redirect_uri": LOOPBACK_CB,
            "code_verifier": verifier,
            **extra,
        }
        return await self.http.post("/oauth/token", data=form)


def pkce(verifier: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )


def query_of(response: httpx.Response) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["location"]).query).items()}


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


BASE_SETTINGS = Settings(
    issuer=ISSUER,
    api_key=API_KEY,
    consent="auto",
    cimd_enabled=False,
    rate_limit_per_minute=0,
)


@pytest.fixture
async def make_harness(store: Store, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    made: list[Harness] = []

    async def make(es256: bool = False, **overrides: Any) -> Harness:
        resolver = overrides.pop("client_resolver", None)
        settings = replace(BASE_SETTINGS, **overrides)
        clock = Clock(1_900_000_000.0)
        ring = load_or_create(tmp_path / "keys") if es256 else hs256_ring("k" * 40)
        tokens = TokenService(
            ring, issuer=settings.issuer, ttl=settings.access_token_ttl, clock=clock
        )
        server = build_authorization_server(
            settings, tokens=tokens, store=store, client_resolver=resolver, clock=clock
        )
        await server.startup()
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=server.app), base_url=ISSUER)
        made.append(Harness(server, http, tokens, clock, settings))
        return made[-1]

    yield make
    for harness in made:
        await harness.http.aclose()
        await harness.server.shutdown()


@pytest.fixture
async def harness(make_harness: Callable[..., Any]) -> Harness:
    made: Harness = await make_harness()
    return made
