"""The /mcp endpoint: the official SDK's MCPServer over Streamable HTTP.

Tools call the same MemoryService as the REST API. The server runs stateless, so
any request can reach any process and a backend restart breaks no session.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from starlette.types import Receive, Scope, Send

from backend import validation
from backend.api import DUPLICATE, STORED, search_response, tag_hits
from backend.errors import BackendError
from backend.identity import Identity, identity_from_headers
from backend.models import JSONObject, PageRequest
from backend.service import MemoryService


def request_identity(ctx: Context) -> Identity:
    try:
        return identity_from_headers(ctx.headers)
    except ValueError:  # no request in flight, e.g. an in-process call
        return identity_from_headers(None)


@contextmanager
def tool_errors() -> Iterator[None]:
    try:
        yield
    except BackendError as exc:
        raise ToolError(exc.detail) from None


class MemoryTools:
    def __init__(self, service: MemoryService) -> None:
        self.service = service

    async def store_memory(
        self,
        content: str,
        ctx: Context,
        tags: list[str] | None = None,
        memory_type: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> JSONObject:
        body = {"content": content, "tags": tags, "memory_type": memory_type, "metadata": metadata}
        with tool_errors():
            new = validation.new_memory(body, self.service.max_content, request_identity(ctx))
        result = await self.service.add(new)
        message = STORED if result.created else DUPLICATE
        return {"success": True, "message": message, "content_hash": result.memory.content_hash}

    async def retrieve_memory(self, query: str, n_results: int = 5) -> JSONObject:
        with tool_errors():
            query, n_results = validation.search_query({"query": query, "n_results": n_results})
        return search_response(await self.service.search(query, n_results), query, "fulltext")

    async def search_by_tag(self, tags: list[str] | str, match_all: bool = False) -> JSONObject:
        with tool_errors():
            wanted, match_all, limit = validation.tag_query({"tags": tags, "match_all": match_all})
        memories = await self.service.search_by_tags(wanted, match_all, limit)
        query = "tags: " + ", ".join(wanted)
        return {**search_response(tag_hits(memories, wanted), query, "tag"), "match_all": match_all}

    async def list_memories(
        self,
        page: int = 1,
        page_size: int = 10,
        tag: str | None = None,
        memory_type: str | None = None,
    ) -> JSONObject:
        with tool_errors():
            validation.bounded_int(page, "page", 1, validation.MAX_PAGE)
            validation.bounded_int(page_size, "page_size", 10, validation.MAX_PAGE_SIZE)
        request = PageRequest(page=page, page_size=page_size, tag=tag, memory_type=memory_type)
        return (await self.service.list_page(request)).to_json()

    async def delete_memory(self, content_hash: str) -> JSONObject:
        deleted = await self.service.delete(content_hash)
        message = "Memory deleted successfully" if deleted else "Memory not found"
        return {"success": deleted, "message": message, "content_hash": content_hash}

    async def check_database_health(self) -> JSONObject:
        stats = await self.service.stats()
        return {
            "status": "healthy",
            "backend": "sqlite",
            "statistics": {
                "total_memories": stats.total_memories,
                "total_tags": stats.total_tags,
                "storage_size": stats.db_size_bytes,
            },
        }


DESCRIPTIONS = {
    "store_memory": "Store a memory with optional tags, type and metadata. Idempotent: "
    "storing the same content again returns the existing content_hash.",
    "retrieve_memory": "Full-text search of stored memories, best matches first.",
    "search_by_tag": "Find memories carrying any (or, with match_all, every) of the tags.",
    "list_memories": "List memories, newest first, one page at a time.",
    "delete_memory": "Delete a memory by its content_hash.",
    "check_database_health": "Report the memory store's health and size.",
}


# MCP tool annotations: the gateway needs only `read` for a tool the server declares
# read-only, `write` for every other one (docs/policy.md "Tool scopes").
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
ANNOTATIONS = {
    "store_memory": ToolAnnotations(
        read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False
    ),
    "retrieve_memory": READ_ONLY,
    "search_by_tag": READ_ONLY,
    "list_memories": READ_ONLY,
    "delete_memory": ToolAnnotations(
        read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
    ),
    "check_database_health": READ_ONLY,
}


def create_mcp_server(service: MemoryService, version: str) -> MCPServer:
    server: MCPServer = MCPServer("memory-backend", version=version, log_level="WARNING")
    tools = MemoryTools(service)
    for name, description in DESCRIPTIONS.items():
        server.add_tool(
            getattr(tools, name), name=name, description=description, annotations=ANNOTATIONS[name]
        )
    return server


def create_session_manager(
    server: MCPServer, *, json_response: bool, max_body: int
) -> StreamableHTTPSessionManager:
    server.streamable_http_app(
        json_response=json_response,
        stateless_http=True,
        max_request_body_size=max_body,
        # The backend sits behind the gateway, which forwards its own Host header;
        # the SDK's localhost-only Host check would refuse those requests.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    return server.session_manager


class MCPEndpoint:
    """Serves /mcp and /mcp/ alike, so neither answers with a redirect."""

    def __init__(self, manager: StreamableHTTPSessionManager) -> None:
        self.manager = manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.manager.handle_request(scope, receive, send)
