from collections.abc import Iterator

import pytest

from tests.integration.live import LiveGateway, live_stack


@pytest.fixture(scope="session")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    with live_stack(tmp_path_factory.mktemp("live")) as gateway:
        yield gateway


@pytest.fixture(scope="session")
def live_gateway_consent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    env = {"MCP_OAUTH_CONSENT": "api_key", "MCP_API_KEY": "integration-test-api-key-0123456789"}
    with live_stack(tmp_path_factory.mktemp("live-consent"), env) as gateway:
        yield gateway
