from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.backend.support import AppFactory, serve

pytestmark = pytest.mark.anyio

TOOLS = {
    "store_memory",
    "retrieve_memory",
    "search_by_tag",
    "list_memories",
    "delete_memory",
    "check_database_health",
}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"},
    },
}
ACCEPT = {"accept": "application/json, text/event-stream"}


@pytest.fixture(params=["json", "sse"])
def mode(request: pytest.FixtureRequest) -> str:
    mode: str = request.param
    return mode


@pytest.fixture
def mcp_url(make_app: AppFactory, mode: str) -> Iterator[str]:
    with serve(make_app(max_content=2048, mcp_json_response=mode == "json")) as url:
        yield url


def connect(url: str, client_id: str = "mcp-client", mode: str = "legacy") -> Client:
    http = create_mcp_http_client(headers={"X-Auth-Client-Id": client_id, "X-Auth-Subject": "bob"})
    return Client(streamable_http_client(url + "/mcp", http_client=http), mode=mode)


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    content: dict[str, Any] = result.structured_content
    return content


async def test_sdk_client_initializes_lists_stores_and_retrieves(mcp_url: str) -> None:
    async with connect(mcp_url) as client:
        tools = await client.list_tools()
        assert {tool.name for tool in tools.tools} == TOOLS
        stored = structured(
            await client.call_tool(
                "store_memory", {"content": "The launch code is swordfish", "tags": ["secret"]}
            )
        )
        found = structured(await client.call_tool("retrieve_memory", {"query": "swordfish"}))
    assert stored["success"] is True
    [hit] = found["results"]
    assert hit["memory"]["content_hash"] == stored["content_hash"]
    assert hit["memory"]["metadata"]["stored_by"] == "mcp-client"
    assert hit["memory"]["metadata"]["stored_by_subject"] == "bob"


async def test_tools_share_the_rest_store(mcp_url: str) -> None:
    async with httpx.AsyncClient(base_url=mcp_url) as http:
        await http.post("/api/memories", json={"content": "from rest", "tags": ["both"]})
        async with connect(mcp_url, client_id="agent-7") as client:
            stored = structured(
                await client.call_tool(
                    "store_memory", {"content": "from mcp", "tags": ["both"], "memory_type": "n"}
                )
            )
            by_tag = structured(await client.call_tool("search_by_tag", {"tags": ["both"]}))
            listing = structured(await client.call_tool("list_memories", {"page_size": 1}))
            health = structured(await client.call_tool("check_database_health", {}))
            deleted = structured(
                await client.call_tool("delete_memory", {"content_hash": stored["content_hash"]})
            )
            missing = structured(
                await client.call_tool("delete_memory", {"content_hash": stored["content_hash"]})
            )
        remaining = (await http.get("/api/memories")).json()
    assert {hit["memory"]["content"] for hit in by_tag["results"]} == {"from rest", "from mcp"}
    assert listing["total"] == 2
    assert listing["has_more"] is True
    assert listing["memories"][0]["metadata"]["stored_by"] == "agent-7"
    assert health["status"] == "healthy"
    assert health["statistics"]["total_memories"] == 2
    assert deleted["success"] is True
    assert missing["success"] is False
    assert [memory["content"] for memory in remaining["memories"]] == ["from rest"]


async def test_store_is_idempotent_over_mcp(mcp_url: str) -> None:
    async with connect(mcp_url) as client:
        first = structured(await client.call_tool("store_memory", {"content": "Same"}))
        second = structured(await client.call_tool("store_memory", {"content": " same "}))
    assert second["content_hash"] == first["content_hash"]
    assert "duplicate" in second["message"].lower()


@pytest.mark.parametrize(
    ("tool", "arguments", "message"),
    [
        ("store_memory", {"content": "  "}, "content"),
        ("store_memory", {"content": "x" * 2049}, "exceeds"),
        ("retrieve_memory", {"query": "x", "n_results": 0}, "n_results"),
        ("search_by_tag", {"tags": []}, "tags"),
        ("list_memories", {"page_size": 500}, "page_size"),
    ],
)
async def test_bad_tool_arguments_are_tool_errors(
    mcp_url: str, tool: str, arguments: dict[str, Any], message: str
) -> None:
    async with connect(mcp_url) as client:
        result = await client.call_tool(tool, arguments)
    assert result.is_error
    assert message in result.content[0].text  # type: ignore[union-attr]


async def test_auto_negotiating_client_works_too(mcp_url: str) -> None:
    async with connect(mcp_url, mode="auto") as client:
        stored = structured(await client.call_tool("store_memory", {"content": "modern"}))
        found = structured(await client.call_tool("retrieve_memory", {"query": "modern"}))
    assert found["results"][0]["memory"]["content_hash"] == stored["content_hash"]


@pytest.mark.parametrize("path", ["/mcp", "/mcp/"])
async def test_both_paths_answer_without_redirect_in_the_selected_mode(
    mcp_url: str, mode: str, path: str
) -> None:
    async with httpx.AsyncClient(base_url=mcp_url, follow_redirects=False) as http:
        response = await http.post(path, json=INITIALIZE, headers=ACCEPT)
    assert response.status_code == 200
    expected = "application/json" if mode == "json" else "text/event-stream"
    assert response.headers["content-type"].startswith(expected)
    assert '"serverInfo"' in response.text
