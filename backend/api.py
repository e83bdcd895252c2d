"""REST routes under /api, in the shapes of mcp-memory-service."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from backend import validation
from backend.errors import NotFound, PayloadTooLarge
from backend.events import EventStream
from backend.identity import identity_from_headers
from backend.models import JSONObject, Memory, SearchHit
from backend.service import MemoryService

STORED = "Memory stored successfully"
DUPLICATE = "Duplicate content: memory already exists"

# Worst case, JSON escapes each content byte as a 6-byte \uXXXX sequence.
BODY_OVERHEAD = 64 * 1024


def max_body_size(max_content: int) -> int:
    return 6 * max_content + BODY_OVERHEAD


async def read_json(request: Request, limit: int) -> JSONObject:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body exceeds {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes")
    return validation.parse_json_object(bytes(body))


def tag_hits(memories: list[Memory], tags: tuple[str, ...]) -> list[SearchHit]:
    reason = "tags: " + ", ".join(tags)
    return [SearchHit(memory, 1.0, reason) for memory in memories]


class MemoryAPI:
    def __init__(self, service: MemoryService, version: str) -> None:
        self.service = service
        self.version = version
        self.body_limit = max_body_size(service.max_content)

    def routes(self, events: EventStream) -> list[BaseRoute]:
        return [
            Route("/api/health", self.health, methods=["GET"]),
            Route("/api/memories", self.create, methods=["POST"]),
            Route("/api/memories", self.list_memories, methods=["GET"]),
            Route("/api/memories/{content_hash}", self.get, methods=["GET"]),
            Route("/api/memories/{content_hash}", self.update, methods=["PUT"]),
            Route("/api/memories/{content_hash}", self.delete, methods=["DELETE"]),
            Route("/api/search", self.search, methods=["POST"]),
            Route("/api/search/by-tag", self.search_by_tag, methods=["POST"]),
            Route("/api/tags", self.tags, methods=["GET"]),
            Route("/api/events", events, methods=["GET"]),
        ]

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "healthy", "version": self.version})

    async def create(self, request: Request) -> JSONResponse:
        body = await read_json(request, self.body_limit)
        identity = identity_from_headers(request.headers)
        new = validation.new_memory(body, self.service.max_content, identity)
        result = await self.service.add(new)
        message = STORED if result.created else DUPLICATE
        return JSONResponse(
            {
                "success": True,
                "message": message,
                "content_hash": result.memory.content_hash,
                "memory": result.memory.to_json(),
            }
        )

    async def list_memories(self, request: Request) -> JSONResponse:
        page = await self.service.list_page(validation.page_request(request.query_params))
        return JSONResponse(page.to_json())

    async def get(self, request: Request) -> JSONResponse:
        memory = await self.service.get(request.path_params["content_hash"])
        if memory is None:
            raise NotFound("memory not found")
        return JSONResponse(memory.to_json())

    async def update(self, request: Request) -> JSONResponse:
        update = validation.memory_update(await read_json(request, self.body_limit))
        memory = await self.service.update(request.path_params["content_hash"], update)
        if memory is None:
            raise NotFound("memory not found")
        return JSONResponse(
            {
                "success": True,
                "message": "Memory updated successfully",
                "content_hash": memory.content_hash,
                "memory": memory.to_json(),
            }
        )

    async def delete(self, request: Request) -> JSONResponse:
        digest = request.path_params["content_hash"]
        if not await self.service.delete(digest):
            raise NotFound("memory not found")
        return JSONResponse(
            {"success": True, "message": "Memory deleted successfully", "content_hash": digest}
        )

    async def search(self, request: Request) -> JSONResponse:
        query, n_results = validation.search_query(await read_json(request, self.body_limit))
        hits = await self.service.search(query, n_results)
        return JSONResponse(search_response(hits, query, "fulltext"))

    async def search_by_tag(self, request: Request) -> JSONResponse:
        body = await read_json(request, self.body_limit)
        tags, match_all, limit = validation.tag_query(body)
        memories = await self.service.search_by_tags(tags, match_all, limit)
        response = search_response(tag_hits(memories, tags), "tags: " + ", ".join(tags), "tag")
        return JSONResponse({**response, "match_all": match_all})

    async def tags(self, request: Request) -> JSONResponse:
        counts = await self.service.tag_counts()
        return JSONResponse({"tags": [{"tag": tag, "count": count} for tag, count in counts]})


def search_response(hits: list[SearchHit], query: str, search_type: str) -> JSONObject:
    return {
        "results": [hit.to_json() for hit in hits],
        "total_found": len(hits),
        "query": query,
        "search_type": search_type,
    }
