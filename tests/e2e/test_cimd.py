"""Client ID Metadata Documents (R6) end to end: the MCP Python SDK uses an https
`client_id` served from loopback and completes the flow without registering; documents
that lie about their `client_id`, or a redirect they do not list, are refused."""

from __future__ import annotations

import secrets
import ssl
from collections.abc import Iterator

import httpx
import pytest
import trustme

from tests.clients.consent import HeadlessUserAgent
from tests.clients.mcp_python import (
    DEFAULT_REDIRECT,
    HeadlessCallbacks,
    MemoryTokenStorage,
    mcp_session,
    oauth_provider,
    tool_json,
)
from tests.e2e.cimd import DocumentServer, in_process_gateway
from tests.e2e.support import NodeClients, Pkce, authorize_params, last_json_line, seed_memory
from tests.integration.live import LiveGateway


@pytest.fixture(scope="module")
def documents() -> Iterator[DocumentServer]:
    with DocumentServer(trustme.CA()).serving() as server:
        yield server


@pytest.fixture(scope="module")
def cimd_gateway(
    tmp_path_factory: pytest.TempPathFactory, documents: DocumentServer
) -> Iterator[LiveGateway]:
    trusted = ssl.create_default_context()
    documents.ca.configure_trust(trusted)
    with in_process_gateway(tmp_path_factory.mktemp("cimd"), trusted) as gateway:
        yield gateway


NODE_REDIRECT = "http://127.0.0.1:33420/callback"  # tests/clients/mcp_client.mjs


def publish(documents: DocumentServer, name: str, **overrides: object) -> str:
    """A client's metadata document at its own URL; returns that URL (the client_id)."""
    path = f"/clients/{name}-{secrets.token_hex(4)}.json"
    url = documents.url(path)
    documents.documents[path] = {
        "client_id": url,
        "client_name": f"CIMD e2e {name}",
        "redirect_uris": [DEFAULT_REDIRECT, NODE_REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        **overrides,
    }
    return url


@pytest.mark.anyio
async def test_r6_python_sdk_uses_client_id_metadata_document(
    cimd_gateway: LiveGateway, documents: DocumentServer
) -> None:
    """R6: the gateway advertises CIMD, the SDK presents its document URL as client_id,
    the gateway fetches it and the flow completes with no registration."""
    with httpx.Client(verify=cimd_gateway.verify) as http:
        metadata = http.get(f"{cimd_gateway.url}/.well-known/oauth-authorization-server").json()
    assert metadata["client_id_metadata_document_supported"] is True
    client_id = publish(documents, "good")
    content = f"cimd e2e {secrets.token_hex(6)}"
    seed_memory(cimd_gateway, content)
    callbacks = HeadlessCallbacks(HeadlessUserAgent(cimd_gateway.verify))
    storage = MemoryTokenStorage()
    provider = oauth_provider(
        f"{cimd_gateway.url}/mcp", callbacks, storage, client_metadata_url=client_id
    )
    async with mcp_session(f"{cimd_gateway.url}/mcp", provider, cimd_gateway.verify) as client:
        found = tool_json(await client.call_tool("retrieve_memory", {"query": content}))
    assert content in str(found)
    assert storage.client_info is not None
    assert storage.client_info.client_id == client_id
    assert documents.fetches.count(client_id.removeprefix(documents.origin)) >= 1


ID_MISMATCH = ("invalid_client", "client_id does not equal its URL")
NOT_LISTED = ("invalid_request", "redirect_uri is not registered")


@pytest.mark.node
def test_r6_typescript_sdk_uses_client_id_metadata_document(
    node: NodeClients, cimd_gateway: LiveGateway, documents: DocumentServer
) -> None:
    """R6 with the TypeScript SDK's `clientMetadataUrl`: no registration, the document
    URL is the client_id, and the flow reaches the memory tools."""
    client_id = publish(documents, "node")
    content = f"cimd node e2e {secrets.token_hex(6)}"
    seed_memory(cimd_gateway, content)
    done = node.run(
        "mcp_client.mjs",
        [f"{cimd_gateway.url}/mcp", "--content", content, "--client-metadata-url", client_id],
        cimd_gateway,
    )
    summary = last_json_line(done.stdout)
    assert done.returncode == 0, f"{summary.get('error')}\n{done.stderr[-2000:]}"
    assert summary["clientId"] == client_id
    assert summary["retrieved"] is True


@pytest.mark.parametrize(
    ("name", "overrides", "redirect_uri", "refusal"),
    [
        ("other-id", {"client_id": "https://localhost/clients/other.json"}, None, ID_MISMATCH),
        ("unlisted-redirect", {}, "http://127.0.0.1:33419/not-listed", NOT_LISTED),
        ("foreign-redirect", {"redirect_uris": ["https://app.example/cb"]}, None, NOT_LISTED),
    ],
)
def test_r6_document_refused_when_id_or_redirect_does_not_match(
    cimd_gateway: LiveGateway,
    documents: DocumentServer,
    name: str,
    overrides: dict[str, object],
    redirect_uri: str | None,
    refusal: tuple[str, str],
) -> None:
    """R6/A1: a document whose client_id is not its URL, or a redirect_uri it does not
    list, gets the 400 error page: no redirect, no code."""
    error, problem = refusal
    client_id = publish(documents, name, **overrides)
    params = authorize_params(client_id, Pkce.new(), redirect_uri or DEFAULT_REDIRECT)
    with httpx.Client(verify=cimd_gateway.verify) as http:
        answer = http.get(f"{cimd_gateway.url}/oauth/authorize", params=params)
    assert answer.status_code == 400, answer.text
    assert "location" not in answer.headers
    assert answer.json()["error"] == error
    assert problem in answer.json()["error_description"]
