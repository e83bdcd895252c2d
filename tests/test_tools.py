"""gateway.tools: reading the upstream's tool list (pure parts, and the lister against
the project's own backend, whose tools carry annotations)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import anyio
import pytest

from gateway.tools import (
    ToolCatalog,
    ToolLister,
    ToolListError,
    ToolRefresher,
    jsonrpc_result,
    read_only_tools,
)
from tests.integration.live import live_backend
from tests.ports import reserved_port


def test_result_from_a_json_answer() -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": 2, "result": {"tools": []}}).encode()
    assert jsonrpc_result(body, "application/json", 2) == {"tools": []}


def test_result_from_an_sse_answer_with_other_messages_first() -> None:
    note = json.dumps({"jsonrpc": "2.0", "method": "notifications/message", "params": {}})
    answer = json.dumps({"jsonrpc": "2.0", "id": 7, "result": {"ok": True}})
    body = f"event: message\ndata: {note}\n\nevent: message\r\ndata: {answer}\r\n\r\n".encode()
    assert jsonrpc_result(body, "text/event-stream; charset=utf-8", 7) == {"ok": True}


@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        (b"not json", "not JSON"),
        (json.dumps({"jsonrpc": "2.0", "id": 1, "result": {}}).encode(), "no response"),
        (json.dumps({"jsonrpc": "2.0", "id": 2, "error": {"code": -1}}).encode(), "error"),
    ],
)
def test_bad_answers_are_tool_list_errors(body: bytes, phrase: str) -> None:
    with pytest.raises(ToolListError, match=phrase):
        jsonrpc_result(body, "application/json", 2)


@pytest.mark.parametrize("response", ["json", "sse"])
def test_lister_reads_the_backends_annotations(
    tmp_path_factory: pytest.TempPathFactory, response: str
) -> None:
    root = tmp_path_factory.mktemp("tools")
    with live_backend(root, "--mcp-response", response) as url:

        async def fetch() -> dict[str, bool]:
            lister = ToolLister(url, api_key=None, timeout=5)
            try:
                return await lister.fetch()
            finally:
                await lister.aclose()

        tools = anyio.run(fetch)
    assert tools == {
        "store_memory": False,
        "retrieve_memory": True,
        "search_by_tag": True,
        "list_memories": True,
        "delete_memory": False,
        "check_database_health": True,
    }


def test_refresher_keeps_the_last_list_when_the_upstream_goes_away() -> None:
    catalog = ToolCatalog()
    catalog.replace({"memory_search": True})
    lister = ToolLister(f"http://127.0.0.1:{reserved_port()}", api_key=None, timeout=1)
    refresher = ToolRefresher(catalog, lister, refresh=300)

    async def once() -> bool:
        try:
            return await refresher.once()
        finally:
            await lister.aclose()

    assert anyio.run(once) is False
    assert catalog.read_only("memory_search") is True
    assert ToolCatalog().read_only("memory_search") is False  # no list: fail closed


def test_a_tool_listed_twice_is_read_only_only_if_both_listings_say_so() -> None:
    ro = {"name": "t", "annotations": {"readOnlyHint": True}}
    rw = {"name": "t", "annotations": {"readOnlyHint": False}}
    assert read_only_tools({"tools": [ro, rw]})[0] == {"t": False}
    assert read_only_tools({"tools": [rw, ro]})[0] == {"t": False}
    assert read_only_tools({"tools": [ro, ro]})[0] == {"t": True}


@contextlib.asynccontextmanager
async def hostile_upstream(pages: list[list[dict[str, object]]]) -> AsyncIterator[str]:
    """An MCP upstream on loopback: answers initialize, then answers the
    notifications/initialized POST with a body that never ends, then serves `pages`
    of tools/list (a cursor per page)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                message = json.loads(await reader.readexactly(length))
                if "id" not in message:
                    writer.write(b"HTTP/1.1 202 Accepted\r\ntransfer-encoding: chunked\r\n\r\n")
                    for _ in range(600):  # 60 s of body, a chunk every 0.1 s
                        writer.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
                        await writer.drain()
                        await asyncio.sleep(0.1)
                    return
                if message["method"] == "initialize":
                    result: dict[str, object] = {"protocolVersion": "2025-06-18"}
                else:
                    page = int((message.get("params") or {}).get("cursor") or 0)
                    result = {"tools": pages[page]}
                    if page + 1 < len(pages):
                        result["nextCursor"] = str(page + 1)
                body = json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result})
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(body)}\r\n\r\n".encode()
                    + body.encode()
                )
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


def test_lister_ignores_a_notification_answer_and_merges_pages_strictly() -> None:
    """The notification's answer is not read (an endless body used to hold the list
    back until the lister's deadline), and a tool read-only on one page but not on
    another is not read-only."""
    ro: dict[str, object] = {"name": "t", "annotations": {"readOnlyHint": True}}
    rw: dict[str, object] = {"name": "t"}
    other: dict[str, object] = {"name": "u", "annotations": {"readOnlyHint": True}}

    async def fetch() -> dict[str, bool]:
        async with hostile_upstream([[ro, other], [rw]]) as url:
            lister = ToolLister(url, api_key=None, timeout=2)
            try:
                return await lister.fetch()
            finally:
                await lister.aclose()

    assert anyio.run(fetch) == {"t": False, "u": True}
