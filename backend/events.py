"""Fan-out of memory change events to Server-Sent Events subscribers.

Each subscriber owns a bounded queue. Publishing never waits: a subscriber whose
queue is full is dropped (its stream ends, so the client can reconnect and resync)
instead of slowing everyone else down or buffering without limit.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.types import Receive, Scope, Send

from backend.models import JSONObject

MEMORY_CREATED = "memory_created"
MEMORY_UPDATED = "memory_updated"
MEMORY_DELETED = "memory_deleted"

HEARTBEAT = b": heartbeat\n\n"
CONNECTED = b"retry: 3000\n: connected\n\n"

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


def encode_event(event_id: int, name: str, data: JSONObject) -> bytes:
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"id: {event_id}\nevent: {name}\ndata: {payload}\n\n".encode()


class EventBroker:
    def __init__(self, queue_size: int = 256) -> None:
        self.queue_size = queue_size
        self._subscribers: set[MemoryObjectSendStream[bytes]] = set()
        self._ids = itertools.count(1)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def publish(self, name: str, data: JSONObject) -> None:
        frame = encode_event(
            next(self._ids), name, {"type": name, "timestamp": time.time(), **data}
        )
        for stream in list(self._subscribers):
            try:
                stream.send_nowait(frame)
            except anyio.WouldBlock:
                self._drop(stream)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.discard(stream)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[MemoryObjectReceiveStream[bytes]]:
        send, receive = anyio.create_memory_object_stream[bytes](self.queue_size)
        self._subscribers.add(send)
        try:
            async with receive:
                yield receive
        finally:
            self._drop(send)

    def _drop(self, stream: MemoryObjectSendStream[bytes]) -> None:
        self._subscribers.discard(stream)
        stream.close()


class EventStream:
    """ASGI endpoint for ``GET /api/events``; every frame is sent as its own body chunk."""

    def __init__(self, broker: EventBroker, heartbeat_interval: float) -> None:
        self.broker = broker
        self.heartbeat_interval = heartbeat_interval

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with self.broker.subscribe() as frames:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            async with anyio.create_task_group() as group:
                group.start_soon(_cancel_on_disconnect, receive, group.cancel_scope)
                with suppress(OSError):  # the client went away mid-write
                    await self._pump(frames, send)
                group.cancel_scope.cancel()

    async def _pump(self, frames: MemoryObjectReceiveStream[bytes], send: Send) -> None:
        await _send_chunk(send, CONNECTED)
        while True:
            frame = HEARTBEAT
            with anyio.move_on_after(self.heartbeat_interval):
                try:
                    frame = await frames.receive()
                except anyio.EndOfStream:  # dropped as a slow subscriber
                    break
            await _send_chunk(send, frame)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _send_chunk(send: Send, chunk: bytes) -> None:
    await send({"type": "http.response.body", "body": chunk, "more_body": True})


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()
