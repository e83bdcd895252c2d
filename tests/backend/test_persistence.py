from __future__ import annotations

import httpx
import pytest

from tests.backend.support import AppFactory, serve

pytestmark = pytest.mark.anyio


async def test_memories_survive_a_backend_restart(make_app: AppFactory) -> None:
    with serve(make_app()) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            stored = await http.post(
                "/api/memories",
                json={"content": "durable fact", "tags": ["keep"]},
                headers={"X-Auth-Client-Id": "before-restart"},
            )
    assert stored.status_code == 200
    digest = stored.json()["content_hash"]

    with serve(make_app()) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            fetched = await http.get(f"/api/memories/{digest}")
            found = await http.post("/api/search", json={"query": "durable"})
            tags = await http.get("/api/tags")
            again = await http.post("/api/memories", json={"content": "Durable fact"})

    assert fetched.json()["metadata"]["stored_by"] == "before-restart"
    assert [hit["memory"]["content_hash"] for hit in found.json()["results"]] == [digest]
    assert tags.json() == {"tags": [{"tag": "keep", "count": 1}]}
    assert "duplicate" in again.json()["message"].lower()
