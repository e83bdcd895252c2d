"""Guessing credentials through the proxy is slowed: failures per address are limited."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from gateway.ratelimit import FailureCounter
from tests.clock import Clock
from tests.proxy.conftest import Server, bearer, start_gateway
from tests.proxy.gateway_server import API_KEY


def test_failure_counter_blocks_past_the_limit_until_the_window_ends() -> None:
    clock = Clock(1000.0)
    failures = FailureCounter(2, clock=clock)
    assert not failures.active
    for _ in range(3):
        assert failures.retry_after("10.0.0.1") is None
        failures.record("10.0.0.1")
    assert failures.active
    wait = failures.retry_after("10.0.0.1")
    assert wait is not None
    assert 1 <= wait <= 61
    assert failures.retry_after("10.0.0.2") is None
    clock.now += 60
    assert failures.retry_after("10.0.0.1") is None


def test_failure_counter_is_bounded() -> None:
    failures = FailureCounter(1, clock=Clock(1000.0), capacity=100)
    for n in range(1000):
        failures.record(f"10.0.{n // 256}.{n % 256}")
    assert len(failures._windows) <= 100


@pytest.fixture(scope="module")
def strict_gateway(upstream: Server) -> Iterator[Server]:
    server = start_gateway(upstream.url, "rate_limit_per_minute=3", "trusted_proxies=127.0.0.1/32")
    yield server
    server.stop()


def test_guessing_the_api_key_gets_429_and_other_clients_are_not_affected(
    strict_gateway: Server,
) -> None:
    guesser = {"X-Forwarded-For": "203.0.113.7"}
    with httpx.Client(base_url=strict_gateway.url, timeout=10) as http:
        statuses = [
            http.get("/api/memories", headers={**guesser, "X-API-Key": f"guess-{n}"}).status_code
            for n in range(4)
        ]
        assert statuses == [401, 401, 401, 401]
        blocked = http.get("/api/memories", headers={**guesser, "X-API-Key": "guess-5"})
        assert blocked.status_code == 429
        assert blocked.json()["error"] == "slow_down"
        assert int(blocked.headers["retry-after"]) >= 1
        # Failures are refused, not the address: a valid credential from it still works.
        valid = http.get("/api/memories", headers={**guesser, "X-API-Key": API_KEY})
        assert valid.status_code == 200
        token = http.get("/api/memories", headers={**guesser, **bearer("read")})
        assert token.status_code == 200
        bad_token = {**guesser, "Authorization": "Bearer not.a.token"}
        assert http.get("/api/memories", headers=bad_token).status_code == 429
        other = {"X-Forwarded-For": "198.51.100.9", "X-API-Key": API_KEY}
        assert http.get("/api/memories", headers=other).status_code == 200
        assert http.get("/api/memories", headers=bearer("read")).status_code == 200
