"""Composition root: create_app builds the store, broker, service and routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from backend import __version__
from backend.api import MemoryAPI, max_body_size
from backend.errors import BackendError, BadRequest, MethodNotAllowed, NotFound
from backend.events import EventBroker, EventStream
from backend.mcp import MCPEndpoint, create_mcp_server, create_session_manager
from backend.service import MemoryService
from backend.store import MemoryStore

DEFAULT_MAX_CONTENT = 1024 * 1024
DEFAULT_HEARTBEAT_INTERVAL = 15.0
DEFAULT_EVENT_QUEUE_SIZE = 256


async def render_backend_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BackendError)
    return JSONResponse(exc.to_json(), status_code=exc.status_code)


async def render_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error: BackendError
    if exc.status_code == 404:
        error = NotFound(f"no route for {request.method} {request.url.path}")
    elif exc.status_code == 405:
        error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
    else:
        error = BadRequest(str(exc.detail))
    return JSONResponse(error.to_json(), status_code=exc.status_code, headers=exc.headers)


async def render_internal_error(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "internal_error", "detail": "internal server error"}, 500)


def create_app(
    db_path: str | Path,
    *,
    max_content: int = DEFAULT_MAX_CONTENT,
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
    event_queue_size: int = DEFAULT_EVENT_QUEUE_SIZE,
    mcp_json_response: bool = True,
) -> Starlette:
    store = MemoryStore(db_path)
    broker = EventBroker(event_queue_size)
    service = MemoryService(store, broker, max_content)
    manager = create_session_manager(
        create_mcp_server(service, __version__),
        json_response=mcp_json_response,
        max_body=max_body_size(max_content),
    )
    mcp = MCPEndpoint(manager)
    routes = [
        *MemoryAPI(service, __version__).routes(EventStream(broker, heartbeat_interval)),
        Route("/mcp", mcp),
        Route("/mcp/", mcp),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            async with manager.run():
                yield
        finally:
            store.close()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            BackendError: render_backend_error,
            HTTPException: render_http_exception,
            Exception: render_internal_error,
        },
    )
    app.state.service = service
    app.state.broker = broker
    return app
