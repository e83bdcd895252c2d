from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from backend.app import create_app
from tests.backend.support import AppFactory, serve


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "memories.db"


@pytest.fixture
def make_app(db_path: Path) -> AppFactory:
    def factory(**options: Any) -> Starlette:
        return create_app(db_path, **options)

    return factory


@pytest.fixture
async def client(make_app: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(max_content=1024)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http,
    ):
        yield http


@pytest.fixture
def live_url(make_app: AppFactory) -> Iterator[str]:
    with serve(make_app(heartbeat_interval=0.2)) as url:
        yield url
