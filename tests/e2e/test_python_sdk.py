"""The official MCP Python SDK (`mcp` package) against the live gateway and backend.

Headless: `HeadlessUserAgent` replaces the browser; everything else is the SDK's own
OAuth client (discovery from the 401, DCR, PKCE S256, RFC 8707 resource, RFC 9207 iss,
refresh, SEP-2350 scope step-up) and its Streamable HTTP transport over HTTPS verified
against the development CA.
"""

from __future__ import annotations

import secrets
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest

from tests.clients.consent import AuthorizationFailed, HeadlessUserAgent
from tests.clients.mcp_python import (
    HeadlessCallbacks,
    MemoryTokenStorage,
    mcp_session,
    oauth_provider,
    tool_json,
)
from tests.clock import Clock
from tests.e2e.conftest import API_KEY, CLOCKED_TOKEN_SECONDS
from tests.e2e.support import jwt_claims, seed_memory
from tests.integration.live import LiveGateway

pytestmark = pytest.mark.anyio

LEEWAY_SECONDS = 30  # the gateway accepts a token this long past `exp` (J2)


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def authorize_query(callbacks: HeadlessCallbacks, index: int) -> dict[str, list[str]]:
    return parse_qs(urlsplit(callbacks.agent.visited[index]).query)


async def read_through_sdk(gateway: LiveGateway, callbacks: HeadlessCallbacks) -> None:
    content = f"python sdk e2e {secrets.token_hex(6)}"
    seed_memory(gateway, content)
    storage = MemoryTokenStorage()
    provider = oauth_provider(f"{gateway.url}/mcp", callbacks, storage)
    async with mcp_session(f"{gateway.url}/mcp", provider, gateway.verify) as client:
        assert client.server_info is not None
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert {"store_memory", "retrieve_memory"} <= tools
        found = tool_json(await client.call_tool("retrieve_memory", {"query": content}))
    assert content in str(found), found
    assert storage.client_info is not None
    assert storage.client_info.client_id
    assert storage.tokens is not None
    claims = jwt_claims(storage.tokens.access_token)
    assert claims["iss"] == gateway.url
    assert claims["aud"] in (f"{gateway.url}/mcp", [f"{gateway.url}/mcp"])
    first = authorize_query(callbacks, 0)
    assert first["code_challenge_method"] == ["S256"]
    assert first["resource"] == [f"{gateway.url}/mcp"]
    assert len(callbacks.redirects) == 1
    assert callbacks.redirects[0].params["iss"] == gateway.url


async def test_python_sdk_auto_consent_initialize_tools_retrieve(gateway: LiveGateway) -> None:
    """D5 -> D4 -> R1 -> A3 -> T3: a fresh SDK client discovers, registers, authorises
    with PKCE, initializes and reads memories through the gateway unaided."""
    await read_through_sdk(gateway, HeadlessCallbacks(HeadlessUserAgent(gateway.verify)))


async def test_a6_python_sdk_consent_form_approved_with_api_key(
    consent_gateway: LiveGateway,
) -> None:
    """A6: the same flow when the operator approves the consent page with the API key."""
    agent = HeadlessUserAgent(consent_gateway.verify, api_key=API_KEY)
    await read_through_sdk(consent_gateway, HeadlessCallbacks(agent))


async def test_a6_python_sdk_wrong_api_key_gets_no_token(consent_gateway: LiveGateway) -> None:
    """A6: a consent form posted with a wrong key never sends the client a code."""
    agent = HeadlessUserAgent(consent_gateway.verify, api_key="not-the-key-" + "x" * 24)
    callbacks = HeadlessCallbacks(agent)
    provider = oauth_provider(f"{consent_gateway.url}/mcp", callbacks, MemoryTokenStorage())
    with pytest.raises(BaseExceptionGroup) as failure:
        async with mcp_session(f"{consent_gateway.url}/mcp", provider, consent_gateway.verify):
            pass
    refusals = [e for e in leaves(failure.value) if isinstance(e, AuthorizationFailed)]
    assert refusals
    assert "authorize answered 401" in str(refusals[0])
    assert callbacks.redirects == []


async def test_d6_python_sdk_steps_up_from_read_to_write(gateway: LiveGateway) -> None:
    """D6: holding `read`, store_memory gets 403 insufficient_scope; the SDK re-authorises
    for the union of scopes and the call succeeds on the same session."""
    callbacks = HeadlessCallbacks(HeadlessUserAgent(gateway.verify))
    storage = MemoryTokenStorage()
    provider = oauth_provider(f"{gateway.url}/mcp", callbacks, storage)
    async with mcp_session(f"{gateway.url}/mcp", provider, gateway.verify) as client:
        assert storage.tokens is not None
        first_scope = set((storage.tokens.scope or "").split())
        assert "read" in first_scope, first_scope
        assert "write" not in first_scope, first_scope
        content = f"step-up {secrets.token_hex(6)}"
        stored = tool_json(await client.call_tool("store_memory", {"content": content}))
        found = tool_json(await client.call_tool("retrieve_memory", {"query": content}))
    assert stored["success"] is True
    assert content in str(found)
    assert len(callbacks.agent.visited) == 2, "expected exactly one step-up authorization"
    step_up = authorize_query(callbacks, 1)
    assert {"read", "write"} <= set(step_up["scope"][0].split())
    assert "write" in (storage.tokens.scope or "").split()


async def test_t5_python_sdk_refreshes_past_expiry_while_a_twin_refreshes_concurrently(
    clocked_gateway: tuple[LiveGateway, Clock],
) -> None:
    """T5 with short tokens: past expiry (and the 30 s leeway) the SDK refreshes on
    its own while a second copy of the same credentials (another instance sharing the
    token file) refreshes with the same refresh token at the same moment. The grace
    window serves both; the SDK never falls back to a new authorization and the rotated
    refresh token keeps working. The SDK's expiry passes in real time (`expires_in` is
    CLOCKED_TOKEN_SECONDS); the gateway's clock is moved past `exp` + leeway."""
    gateway, clock = clocked_gateway
    callbacks = HeadlessCallbacks(HeadlessUserAgent(gateway.verify))
    storage = MemoryTokenStorage()
    url = f"{gateway.url}/mcp"
    exchanges: list[str] = []
    provider = oauth_provider(url, callbacks, storage)
    async with (
        mcp_session(url, provider, gateway.verify, exchanges) as client,
        httpx.AsyncClient(base_url=gateway.url, verify=gateway.verify) as http,
    ):
        old = storage.tokens
        assert old is not None
        assert old.refresh_token
        assert old.expires_in == CLOCKED_TOKEN_SECONDS
        assert storage.client_info is not None
        client_id = storage.client_info.client_id
        await anyio.sleep(CLOCKED_TOKEN_SECONDS + 0.5)  # the SDK's own expiry, real time
        expires = jwt_claims(old.access_token)["exp"]
        assert isinstance(expires, int)
        clock.now = expires + LEEWAY_SECONDS + 2
        stale = await http.post("/mcp", headers={"Authorization": f"Bearer {old.access_token}"})
        assert stale.status_code == 401
        assert 'error="invalid_token"' in stale.headers["www-authenticate"]

        twin: list[httpx.Response] = []
        found: list[dict[str, object]] = []

        async def twin_refresh() -> None:
            data = {"grant_type": "refresh_token", "refresh_token": old.refresh_token}
            twin.append(await http.post("/oauth/token", data={**data, "client_id": client_id}))

        async def sdk_call() -> None:
            found.append(tool_json(await client.call_tool("retrieve_memory", {"query": "x"})))

        async with anyio.create_task_group() as group:
            group.start_soon(sdk_call)
            group.start_soon(twin_refresh)
        assert twin[0].status_code == 200, twin[0].text
        assert len(found) == 1
        tool_json(await client.call_tool("retrieve_memory", {"query": "again"}))
    assert len(callbacks.agent.visited) == 1, f"the SDK re-authorised: {exchanges}"
    token_requests = [line for line in exchanges if line.startswith("POST /oauth/token")]
    assert token_requests == ["POST /oauth/token -> 200"] * 2, "code exchange, then a refresh"
    newest = storage.tokens
    assert newest is not None
    assert newest.refresh_token not in (None, old.refresh_token)
    async with httpx.AsyncClient(verify=gateway.verify) as http:
        again = await http.post(
            f"{gateway.url}/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": newest.refresh_token,
                "client_id": client_id,
            },
        )
    assert again.status_code == 200, again.text
