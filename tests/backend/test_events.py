from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import httpx
import pytest

from backend.events import EventBroker
from tests.backend.support import AppFactory, serve

pytestmark = pytest.mark.anyio


@dataclass
class Event:
    name: str | None
    data: dict[str, object] | None
    comments: list[str]


async def events(response: httpx.Response) -> AsyncIterator[Event]:
    name: str | None = None
    data: dict[str, object] | None = None
    comments: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            yield Event(name, data, comments)
            name, data, comments = None, None, []
        elif line.startswith(":"):
            comments.append(line[1:].strip())
        elif line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = json.loads(line.removeprefix("data: "))


async def next_named(stream: AsyncIterator[Event]) -> Event:
    async for event in stream:
        if event.name is not None:
            return event
    raise AssertionError("stream ended")


async def test_slow_subscriber_is_dropped_without_holding_back_others() -> None:
    broker = EventBroker(queue_size=2)
    async with broker.subscribe() as slow, broker.subscribe() as fast:
        for number in range(10):
            broker.publish("memory_created", {"n": number})
            frame = await fast.receive()
            assert f'"n":{number}'.encode() in frame
        assert broker.subscriber_count == 1
        backlog = [frame async for frame in slow]
    assert len(backlog) == 2  # bounded: the rest was never queued
    assert broker.subscriber_count == 0


async def test_store_update_delete_are_streamed(live_url: str) -> None:
    async with (
        httpx.AsyncClient(base_url=live_url, timeout=5) as http,
        http.stream("GET", "/api/events") as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = events(response)
        assert "connected" in (await anext(stream)).comments
        stored = await http.post(
            "/api/memories", json={"content": "streamed"}, headers={"X-Auth-Client-Id": "c9"}
        )
        digest = stored.json()["content_hash"]
        created = await next_named(stream)
        await http.put(f"/api/memories/{digest}", json={"tags": ["t"]})
        updated = await next_named(stream)
        await http.delete(f"/api/memories/{digest}")
        deleted = await next_named(stream)

    assert created.name == "memory_created"
    assert created.data is not None
    assert created.data["content_hash"] == digest
    assert created.data["memory"]["metadata"]["stored_by"] == "c9"  # type: ignore[index]
    assert updated.name == "memory_updated"
    assert updated.data is not None
    assert updated.data["memory"]["tags"] == ["t"]  # type: ignore[index]
    assert deleted.name == "memory_deleted"
    assert deleted.data is not None
    assert deleted.data["content_hash"] == digest


async def test_heartbeat_comment_is_sent_when_idle(live_url: str) -> None:
    async with (
        httpx.AsyncClient(base_url=live_url, timeout=5) as http,
        http.stream("GET", "/api/events") as response,
    ):
        stream = events(response)
        await anext(stream)
        with anyio.fail_after(2):  # the fixture's interval is 0.2 s
            heartbeat = await anext(stream)
    assert heartbeat.comments == ["heartbeat"]
    assert heartbeat.name is None


async def test_event_is_flushed_immediately_to_every_subscriber(make_app: AppFactory) -> None:
    app = make_app(heartbeat_interval=60)
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            received: list[Event] = []

            async def subscriber(ready: anyio.Event) -> None:
                async with http.stream("GET", "/api/events") as response:
                    stream = events(response)
                    await anext(stream)
                    ready.set()
                    received.append(await next_named(stream))

            async with anyio.create_task_group() as group:
                for _ in range(20):
                    ready = anyio.Event()
                    group.start_soon(subscriber, ready)
                    await ready.wait()
                started = time.monotonic()
                await http.post("/api/memories", json={"content": "to everyone"})
                with anyio.fail_after(3):
                    while len(received) < 20:
                        await anyio.sleep(0.01)
                elapsed = time.monotonic() - started
    assert {event.name for event in received} == {"memory_created"}
    assert elapsed < 3  # far below the 60 s heartbeat: nothing sat in a buffer


async def test_disconnected_subscriber_is_forgotten(make_app: AppFactory) -> None:
    app = make_app(heartbeat_interval=60)
    broker: EventBroker = app.state.broker
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            async with http.stream("GET", "/api/events") as response:
                await anext(events(response))
                assert broker.subscriber_count == 1
            with anyio.fail_after(3):
                while broker.subscriber_count:
                    await anyio.sleep(0.02)
