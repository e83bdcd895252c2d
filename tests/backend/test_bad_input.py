from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

pytestmark = pytest.mark.anyio

MAX_CONTENT = 1024  # what the `client` fixture configures

CASES = [
    # (method, path, raw body, status, field)
    ("POST", "/api/memories", b"{not json", 400, None),
    ("POST", "/api/memories", b"", 400, None),
    ("POST", "/api/memories", b"[1, 2]", 400, None),
    ("POST", "/api/memories", b"\xff\xfe", 400, None),
    ("POST", "/api/memories", b"[" * 50_000, 400, None),
    ("POST", "/api/memories", b"{}", 422, "content"),
    ("POST", "/api/memories", b'{"content": 5}', 422, "content"),
    ("POST", "/api/memories", b'{"content": "   "}', 422, "content"),
    ("POST", "/api/memories", b'{"content": "\\ud800"}', 422, "content"),
    ("POST", "/api/memories", b'{"content": "ok", "tags": "a"}', 200, None),
    ("POST", "/api/memories", b'{"content": "ok", "tags": [1]}', 422, "tags"),
    ("POST", "/api/memories", b'{"content": "ok", "tags": {"a": 1}}', 422, "tags"),
    ("POST", "/api/memories", b'{"content": "ok", "tags": ["\\udfff"]}', 422, "tags"),
    ("POST", "/api/memories", b'{"content": "ok", "memory_type": []}', 422, "memory_type"),
    ("POST", "/api/memories", b'{"content": "ok", "metadata": [1]}', 422, "metadata"),
    ("POST", "/api/memories", b'{"content": "ok", "metadata": {"n": NaN}}', 422, "metadata"),
    ("POST", "/api/memories", b'{"content": "ok", "metadata": {"k": "\\ud800"}}', 422, "metadata"),
    ("POST", "/api/search", b"{}", 422, "query"),
    ("POST", "/api/search", b'{"query": 3}', 422, "query"),
    ("POST", "/api/search", b'{"query": ""}', 422, "query"),
    ("POST", "/api/search", b'{"query": "x", "n_results": "5"}', 422, "n_results"),
    ("POST", "/api/search", b'{"query": "x", "n_results": true}', 422, "n_results"),
    ("POST", "/api/search", b'{"query": "x", "n_results": 0}', 422, "n_results"),
    ("POST", "/api/search", b'{"query": "x", "n_results": 101}', 422, "n_results"),
    ("POST", "/api/search", b'{"query": "x", "n_results": 1.5}', 422, "n_results"),
    ("POST", "/api/search/by-tag", b"{}", 422, "tags"),
    ("POST", "/api/search/by-tag", b'{"tags": []}', 422, "tags"),
    ("POST", "/api/search/by-tag", b'{"tags": ["a"], "match_all": "yes"}', 422, "match_all"),
    ("POST", "/api/search/by-tag", b"nope", 400, None),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "field"), CASES)
async def test_bad_body_is_a_json_client_error_naming_the_field(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: bytes,
    status: int,
    field: str | None,
) -> None:
    response = await client.request(
        method, path, content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    if status >= 400:
        error = response.json()
        assert error["detail"]
        assert error.get("field") == field


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"page": "0"}, "page"),
        ({"page": "x"}, "page"),
        ({"page": "9" * 30}, "page"),
        ({"page_size": "101"}, "page_size"),
        ({"page_size": "-1"}, "page_size"),
        ({"page_size": "1e3"}, "page_size"),
    ],
)
async def test_bad_list_query_is_422(
    client: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    response = await client.get("/api/memories", params=params)
    assert response.status_code == 422
    assert response.json()["field"] == field


async def test_update_cannot_change_content(client: httpx.AsyncClient) -> None:
    stored = await client.post("/api/memories", json={"content": "fixed"})
    digest = stored.json()["content_hash"]
    response = await client.put(f"/api/memories/{digest}", json={"content": "changed"})
    assert response.status_code == 422
    assert response.json()["field"] == "content"


async def test_update_with_bad_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.put("/api/memories/abc", content=b"{")
    assert response.status_code == 400


async def test_content_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    at_limit = await client.post("/api/memories", json={"content": "a" * MAX_CONTENT})
    assert at_limit.status_code == 200
    over = await client.post("/api/memories", json={"content": "b" * (MAX_CONTENT + 1)})
    assert over.status_code == 413
    assert over.json() == {
        "error": "payload_too_large",
        "detail": f"content exceeds {MAX_CONTENT} bytes",
        "field": "content",
    }


async def test_limit_counts_utf8_bytes(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/memories", json={"content": "é" * (MAX_CONTENT // 2 + 1)})
    assert response.status_code == 413


async def test_huge_body_is_refused_before_parsing(client: httpx.AsyncClient) -> None:
    body = b'{"content": "x", "metadata": {"pad": "' + b"p" * 200_000 + b'"}}'
    response = await client.post("/api/memories", content=body)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


async def test_chunked_huge_body_is_refused(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"x" * 10_000

    response = await client.post("/api/search", content=chunks())
    assert response.status_code == 413
