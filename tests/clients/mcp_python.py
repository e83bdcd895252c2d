"""The official MCP Python SDK as a real client of the gateway, driven headlessly.

`OAuthClientProvider` does everything a desktop client does (discovery from the 401,
registration or a Client ID Metadata Document, PKCE, token, refresh, scope step-up);
only the browser is replaced by `HeadlessUserAgent`.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx2
from mcp import Client
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from mcp.types import CallToolResult, TextContent

from tests.clients.consent import AuthorizationFailed, HeadlessUserAgent, Redirect

DEFAULT_REDIRECT = "http://127.0.0.1:33419/callback"


@dataclass
class MemoryTokenStorage:
    """The SDK's TokenStorage kept in memory; several providers may share one."""

    tokens: OAuthToken | None = None
    client_info: OAuthClientInformationFull | None = None
    history: list[OAuthToken] = field(default_factory=list)

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens
        self.history.append(tokens)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


@dataclass
class HeadlessCallbacks:
    """The provider's redirect and callback handlers, backed by a HeadlessUserAgent."""

    agent: HeadlessUserAgent
    redirects: list[Redirect] = field(default_factory=list)

    async def redirect(self, authorization_url: str) -> None:
        self.redirects.append(await self.agent.authorize(authorization_url))

    async def callback(self) -> AuthorizationCodeResult:
        params = self.redirects[-1].params
        if "error" in params:
            raise AuthorizationFailed(f"authorization refused: {params}")
        return AuthorizationCodeResult(
            code=params["code"], state=params.get("state"), iss=params.get("iss")
        )


def client_metadata(
    scope: str | None = None, redirect_uri: str = DEFAULT_REDIRECT
) -> OAuthClientMetadata:
    return OAuthClientMetadata(
        client_name="memory-gateway e2e (MCP Python SDK)",
        redirect_uris=[redirect_uri],  # type: ignore[list-item]
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="none",
        scope=scope,
    )


def oauth_provider(
    server_url: str,
    callbacks: HeadlessCallbacks,
    storage: MemoryTokenStorage,
    *,
    scope: str | None = None,
    client_metadata_url: str | None = None,
    redirect_uri: str = DEFAULT_REDIRECT,
) -> OAuthClientProvider:
    return OAuthClientProvider(
        server_url=server_url,
        client_metadata=client_metadata(scope, redirect_uri),
        storage=storage,
        redirect_handler=callbacks.redirect,
        callback_handler=callbacks.callback,
        client_metadata_url=client_metadata_url,
    )


@asynccontextmanager
async def mcp_session(
    server_url: str,
    provider: OAuthClientProvider,
    verify: ssl.SSLContext,
    exchanges: list[str] | None = None,
) -> AsyncIterator[Client]:
    """An initialized MCP session (the `initialize` handshake) through `provider`.
    `exchanges` collects "METHOD path -> status" for every HTTP exchange, auth included."""
    timeout = httpx2.Timeout(30, read=120)
    hooks = {"response": [_recorder(exchanges)]} if exchanges is not None else {}
    async with (
        httpx2.AsyncClient(
            auth=provider, verify=verify, timeout=timeout, event_hooks=hooks
        ) as http,
        Client(streamable_http_client(server_url, http_client=http), mode="legacy") as client,
    ):
        yield client


def _recorder(exchanges: list[str]) -> Callable[[httpx2.Response], Awaitable[None]]:
    async def record(response: httpx2.Response) -> None:
        request = response.request
        exchanges.append(f"{request.method} {request.url.path} -> {response.status_code}")

    return record


def tool_json(result: CallToolResult) -> dict[str, object]:
    """A memory tool's JSON answer; raises if the tool reported an error."""
    if result.is_error:
        raise AssertionError(f"tool error: {result.content}")
    if result.structured_content is not None:
        return dict(result.structured_content)
    texts = [part.text for part in result.content if isinstance(part, TextContent)]
    decoded = json.loads("".join(texts))
    assert isinstance(decoded, dict)
    return decoded
