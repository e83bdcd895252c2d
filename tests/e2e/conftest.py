"""Live stacks for the end-to-end client tests (see tests/integration/live.py).

`gateway`: auto consent.
`clocked_gateway`: auto consent, the gateway in this process on a test clock, with
access tokens of `CLOCKED_TOKEN_SECONDS` (the refresh test moves past their expiry).
`consent_gateway`: consent approved on a form with the operator's API key.
`node`: the Node.js runtime and the committed client packages, or a skip
(a failure when REQUIRE_NODE=1).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clock import Clock
from tests.e2e.support import NodeClients, find_node_clients
from tests.integration.live import LiveGateway, in_process_stack, live_stack

API_KEY = "e2e-consent-api-key-0123456789abcdef"
COMMON_ENV = {"MCP_OAUTH_RATE_LIMIT_PER_MINUTE": "0"}
CLOCKED_TOKEN_SECONDS = 6


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    with live_stack(tmp_path_factory.mktemp("e2e"), COMMON_ENV) as live:
        yield live


@pytest.fixture
def clocked_gateway(tmp_path: Path) -> Iterator[tuple[LiveGateway, Clock]]:
    """The gateway reads `Clock` (started at the real time, moved by the test); the
    client under test keeps the real clock, so its own expiry comes after
    CLOCKED_TOKEN_SECONDS of real time."""
    clock = Clock(time.time())
    with in_process_stack(tmp_path, clock=clock, access_token_ttl=CLOCKED_TOKEN_SECONDS) as live:
        yield live, clock


@pytest.fixture(scope="session")
def consent_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    env = {**COMMON_ENV, "MCP_OAUTH_CONSENT": "api_key", "MCP_API_KEY": API_KEY}
    with live_stack(tmp_path_factory.mktemp("e2e-consent"), env) as live:
        yield live


@pytest.fixture(scope="session")
def node() -> NodeClients:
    return find_node_clients()
