"""gateway.people inside one process (httpx.ASGITransport): session rotation, the
sign-in redirect of browser routes, and the start-up warning. No provider is contacted."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.app import Gateway, create_app
from gateway.oauth.tokens import Person
from gateway.people.flow import People
from gateway.settings import Settings
from tests.clock import Clock

pytestmark = pytest.mark.anyio
ISSUER = "https://memory.example.com"


def settings(**extra: object) -> Settings:
    values: dict[str, object] = {
        "issuer": ISSUER,
        "consent": "oidc",
        "storage": "memory://",
        "oidc_issuer": "https://accounts.example.com",
        "oidc_client_id": "cid",
        "oidc_client_secret": "secret",
        "secret_key": "x" * 32,
        "rate_limit_per_minute": 0,
        "upstream": "http://127.0.0.1:9",
        **extra,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def app() -> AsyncIterator[tuple[Gateway, Clock]]:
    clock = Clock(1_900_000_000.0)
    gateway = create_app(settings(), clock=clock)
    await gateway.startup()
    yield gateway, clock
    await gateway.shutdown()


def people_of(gateway: Gateway) -> People:
    assert gateway.authorization is not None
    people = gateway.authorization.people
    assert people is not None
    return people


def client(gateway: Gateway) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url=ISSUER)


async def test_session_rotates_past_half_its_life_and_the_old_one_dies(
    app: tuple[Gateway, Clock],
) -> None:
    gateway, clock = app
    people = people_of(gateway)
    value, _ = people.sessions.issue("p1", Person(email="p@example.com"), frozenset({"read"}))
    await people.records.put_record(
        "person", "p1", {"subject": "p1", "email": "p@example.com"}, clock.now + 86400
    )
    old = {"Cookie": f"__Host-mgw-session={value}"}
    async with client(gateway) as http:
        fresh = await http.get("/oauth/apps", headers=old)
        assert fresh.status_code == 200
        assert "set-cookie" not in fresh.headers  # young: kept
        clock.now += people.sessions.ttl * 0.6
        rotated = await http.get("/oauth/apps", headers=old)
        assert rotated.status_code == 200
        new = rotated.headers["set-cookie"]
        assert new.startswith("__Host-mgw-session=")
        assert "p@example.com" in rotated.text
        gone = await http.get("/oauth/apps", headers=old)
        assert gone.status_code == 303  # the old session was revoked
        value = new.split(";", 1)[0].split("=", 1)[1]
        again = await http.get("/oauth/apps", headers={"Cookie": f"__Host-mgw-session={value}"})
        assert again.status_code == 200


async def test_browser_route_sends_a_browser_without_session_to_sign_in(
    app: tuple[Gateway, Clock],
) -> None:
    gateway, _ = app
    async with client(gateway) as http:
        page = await http.get("/api/memories?tag=x", headers={"Accept": "text/html"})
        assert page.status_code == 303
        assert page.headers["location"] == "/oauth/login?return_to=%2Fapi%2Fmemories%3Ftag%3Dx"
        api = await http.get("/api/memories", headers={"Accept": "application/json"})
        assert api.status_code == 401  # scripts and API clients get the challenge
        mcp = await http.get("/mcp", headers={"Accept": "text/html"})
        assert mcp.status_code == 401  # not a browser route


async def test_open_admission_warns_at_start_up(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.oauth"):
        create_app(settings())
    assert "no MCP_OAUTH_ALLOWED_* rule" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gateway.oauth"):
        create_app(settings(allowed_domains=("example.com",)))
    assert "no MCP_OAUTH_ALLOWED_* rule" not in caplog.text
