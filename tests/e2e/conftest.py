"""Live stacks for the end-to-end client tests (see tests/integration/live.py).

`gateway`: auto consent, 1-minute access tokens (the refresh test waits past expiry).
`consent_gateway`: consent approved on a form with the operator's API key.
`node`: the Node.js runtime and the committed client packages, or a skip
(a failure when REQUIRE_NODE=1).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.support import NodeClients, find_node_clients
from tests.integration.live import LiveGateway, live_stack

API_KEY = "e2e-consent-api-key-0123456789abcdef"
COMMON_ENV = {"MCP_OAUTH_RATE_LIMIT_PER_MINUTE": "0"}


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    env = {**COMMON_ENV, "MCP_OAUTH_ACCESS_TOKEN_EXPIRE_MINUTES": "1"}
    with live_stack(tmp_path_factory.mktemp("e2e"), env) as live:
        yield live


@pytest.fixture(scope="session")
def consent_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    env = {**COMMON_ENV, "MCP_OAUTH_CONSENT": "api_key", "MCP_API_KEY": API_KEY}
    with live_stack(tmp_path_factory.mktemp("e2e-consent"), env) as live:
        yield live


@pytest.fixture(scope="session")
def node() -> NodeClients:
    return find_node_clients()
