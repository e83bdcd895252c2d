from __future__ import annotations

import hashlib

import httpx
import pytest

pytestmark = pytest.mark.anyio

IDENTITY = {"X-Auth-Client-Id": "client-42", "X-Auth-Subject": "alice", "X-Request-Id": "r-1"}


async def store(client: httpx.AsyncClient, content: str, **fields: object) -> dict[str, object]:
    response = await client.post("/api/memories", json={"content": content, **fields})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_health(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/health")
    assert response.status_code == 200
    assert response.json()["status"] == "healthy"


async def test_store_returns_hash_of_normalised_content_and_attribution(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/api/memories",
        json={
            "content": "  Buy MILK  ",
            "tags": ["shop", "shop", " home "],
            "memory_type": "todo",
            "metadata": {"priority": 2, "stored_by": "forged"},
        },
        headers=IDENTITY,
    )
    body = response.json()
    expected = hashlib.sha256(b"buy milk").hexdigest()
    assert response.status_code == 200
    assert body["success"] is True
    assert body["content_hash"] == expected
    memory = body["memory"]
    assert memory["content"] == "  Buy MILK  "
    assert memory["tags"] == ["shop", "home"]
    assert memory["memory_type"] == "todo"
    assert memory["metadata"] == {
        "priority": 2,
        "stored_by": "client-42",
        "stored_by_subject": "alice",
    }
    assert memory["created_at_iso"].endswith("Z")


async def test_store_without_identity_headers_records_nobody(client: httpx.AsyncClient) -> None:
    body = await store(client, "anonymous note")
    memory = body["memory"]
    assert isinstance(memory, dict)
    assert memory["metadata"] == {"stored_by": None, "stored_by_subject": None}


async def test_storing_same_content_twice_is_idempotent(client: httpx.AsyncClient) -> None:
    first = await store(client, "Remember the alamo", tags=["history"])
    second = await store(client, "  remember THE alamo ", tags=["other"])
    assert second["success"] is True
    assert "duplicate" in str(second["message"]).lower()
    assert second["content_hash"] == first["content_hash"]
    assert second["memory"] == first["memory"]
    listing = (await client.get("/api/memories")).json()
    assert listing["total"] == 1


async def test_get_update_delete_by_hash(client: httpx.AsyncClient) -> None:
    digest = (await store(client, "editable", tags=["a"], metadata={"x": 1}))["content_hash"]
    fetched = await client.get(f"/api/memories/{digest}")
    assert fetched.status_code == 200
    assert fetched.json()["content"] == "editable"

    updated = await client.put(
        f"/api/memories/{digest}",
        json={"tags": ["b", "c"], "memory_type": "fact", "metadata": {"y": 2}},
    )
    assert updated.status_code == 200
    memory = updated.json()["memory"]
    assert memory["tags"] == ["b", "c"]
    assert memory["memory_type"] == "fact"
    assert memory["metadata"]["x"] == 1
    assert memory["metadata"]["y"] == 2
    assert memory["updated_at"] >= memory["created_at"]
    tags = (await client.get("/api/tags")).json()["tags"]
    assert {entry["tag"] for entry in tags} == {"b", "c"}

    deleted = await client.delete(f"/api/memories/{digest}")
    assert deleted.status_code == 200
    assert deleted.json()["content_hash"] == digest
    assert (await client.get(f"/api/memories/{digest}")).status_code == 404


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_unknown_hash_is_404_json(client: httpx.AsyncClient, method: str) -> None:
    response = await client.request(method, "/api/memories/" + "0" * 64, json={"tags": ["x"]})
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


async def test_pagination_newest_first(client: httpx.AsyncClient) -> None:
    for number in range(25):
        await store(client, f"note number {number}")
    pages = [
        (await client.get("/api/memories", params={"page": page, "page_size": 10})).json()
        for page in (1, 2, 3)
    ]
    assert [len(page["memories"]) for page in pages] == [10, 10, 5]
    assert [page["has_more"] for page in pages] == [True, True, False]
    assert all(page["total"] == 25 for page in pages)
    contents = [memory["content"] for page in pages for memory in page["memories"]]
    assert contents == [f"note number {number}" for number in reversed(range(25))]


async def test_list_filters_by_tag_and_type(client: httpx.AsyncClient) -> None:
    await store(client, "one", tags=["red"], memory_type="note")
    await store(client, "two", tags=["red", "blue"], memory_type="todo")
    await store(client, "three", tags=["blue"], memory_type="note")
    red = (await client.get("/api/memories", params={"tag": "red"})).json()
    assert {m["content"] for m in red["memories"]} == {"one", "two"}
    notes = (await client.get("/api/memories", params={"memory_type": "note"})).json()
    assert {m["content"] for m in notes["memories"]} == {"one", "three"}
    both = await client.get("/api/memories", params={"tag": "blue", "memory_type": "note"})
    assert [m["content"] for m in both.json()["memories"]] == ["three"]


async def test_search_ranks_better_matches_first(client: httpx.AsyncClient) -> None:
    await store(client, "the cat sat on the mat")
    await store(client, "dogs chase cats; the cat runs from the dog")
    await store(client, "an unrelated sentence about weather")
    response = await client.post("/api/search", json={"query": "cat dog", "n_results": 5})
    body = response.json()
    assert response.status_code == 200
    assert [hit["memory"]["content"] for hit in body["results"]] == [
        "dogs chase cats; the cat runs from the dog",
        "the cat sat on the mat",
    ]
    scores = [hit["similarity_score"] for hit in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert body["total_found"] == 2
    limited = await client.post("/api/search", json={"query": "cat", "n_results": 1})
    assert len(limited.json()["results"]) == 1


@pytest.mark.parametrize(
    "query",
    [
        '"',
        '""',
        "'",
        "*",
        "cat*",
        "NEAR(cat dog)",
        "cat AND",
        "OR",
        "NOT cat",
        "(",
        ")",
        "content:cat",
        "^cat",
        "cat + - : ;",
        "{cat}",
        "\\",
        "%_",
        "-- DROP TABLE memories",
        "…",
        "猫",
    ],
)
async def test_fts_syntax_in_query_never_errors(client: httpx.AsyncClient, query: str) -> None:
    await store(client, "the cat sat")
    response = await client.post("/api/search", json={"query": query})
    assert response.status_code == 200, response.text
    assert isinstance(response.json()["results"], list)


async def test_fts_operators_are_matched_as_words(client: httpx.AsyncClient) -> None:
    await store(client, "meet NEAR the station")
    await store(client, "cat and dog")
    near = await client.post("/api/search", json={"query": "NEAR"})
    assert [hit["memory"]["content"] for hit in near.json()["results"]] == ["meet NEAR the station"]


async def test_search_by_tag_any_and_all(client: httpx.AsyncClient) -> None:
    await store(client, "alpha", tags=["x"])
    await store(client, "beta", tags=["x", "y"])
    await store(client, "gamma", tags=["z"])
    anyof = await client.post("/api/search/by-tag", json={"tags": ["x", "z"]})
    assert {hit["memory"]["content"] for hit in anyof.json()["results"]} == {
        "alpha",
        "beta",
        "gamma",
    }
    allof = await client.post("/api/search/by-tag", json={"tags": ["x", "y"], "match_all": True})
    assert [hit["memory"]["content"] for hit in allof.json()["results"]] == ["beta"]
    assert allof.json()["match_all"] is True


async def test_tags_are_counted(client: httpx.AsyncClient) -> None:
    await store(client, "a", tags=["common", "rare"])
    await store(client, "b", tags=["common"])
    response = await client.get("/api/tags")
    assert response.json() == {"tags": [{"tag": "common", "count": 2}, {"tag": "rare", "count": 1}]}


async def test_unknown_route_is_404_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/nope")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == "not_found"


async def test_wrong_method_is_405_json(client: httpx.AsyncClient) -> None:
    response = await client.patch("/api/tags")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_event_stream_only_accepts_get(client: httpx.AsyncClient, method: str) -> None:
    response = await client.request(method, "/api/events")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
