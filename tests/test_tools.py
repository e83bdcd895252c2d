"""gateway.tools: reading the upstream's tool list (pure parts, and the lister against
the project's own backend, whose tools carry annotations)."""

from __future__ import annotations

import json
import sys

import anyio
import pytest

from gateway.tools import (
    ToolCatalog,
    ToolLister,
    ToolListError,
    ToolRefresher,
    jsonrpc_result,
)
from tests.integration.live import free_port, running


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
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    db = tmp_path_factory.mktemp("tools") / "m.db"
    command = [sys.executable, "-m", "backend", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--db", str(db), "--mcp-response", response]
    with running(command, {}, f"{url}/api/health", True):

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
    lister = ToolLister(f"http://127.0.0.1:{free_port()}", api_key=None, timeout=1)
    refresher = ToolRefresher(catalog, lister, refresh=300)

    async def once() -> bool:
        try:
            return await refresher.once()
        finally:
            await lister.aclose()

    assert anyio.run(once) is False
    assert catalog.read_only("memory_search") is True
    assert ToolCatalog().read_only("memory_search") is False  # no list: fail closed
