"""A test upstream on real sockets: echoes what it received, streams SSE and large
bodies, stalls on demand, and records client disconnects for the tests to read.

Run: python -m tests.proxy.upstream_app PORT (or fd=N: a listening socket handed over)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
CHUNK = b"x" * 65536
EVENTS: list[str] = []


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    path: str = scope["path"]
    handler = ROUTES.get(path.rsplit("/", 1)[-1], echo)
    await handler(scope, receive, send, query)


async def start(
    send: Send,
    status: int = 200,
    ctype: bytes = b"application/json",
    extra: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    headers = [(b"content-type", ctype), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def echo(scope: Scope, receive: Receive, send: Send, query: dict[str, str]) -> None:
    size = 0
    digest = hashlib.sha256()
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        digest.update(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = json.dumps(
        {
            "method": scope["method"],
            "path": scope["path"],
            "raw_path": scope["raw_path"].decode("latin-1"),
            "query": scope["query_string"].decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "body_size": size,
            "body_sha256": digest.hexdigest(),
        }
    ).encode()
    await start(
        send,
        extra=[
            (b"connection", b"keep-alive, x-upstream-private"),
            (b"x-upstream-private", b"secret"),
            (b"keep-alive", b"timeout=5"),
        ],
    )
    await send({"type": "http.response.body", "body": body})


async def sse(scope: Scope, receive: Receive, send: Send, query: dict[str, str]) -> None:
    count, interval = int(query.get("n", "5")), float(query.get("interval", "0.1"))
    await start(send, ctype=b"text/event-stream", extra=[(b"cache-control", b"no-cache")])
    for i in range(count):
        await asyncio.sleep(interval)
        data = f"id: {i}\ndata: {time.time()!r}\n\n".encode()
        await send({"type": "http.response.body", "body": data, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def download(scope: Scope, receive: Receive, send: Send, query: dict[str, str]) -> None:
    remaining = int(query["size"])
    await start(
        send,
        ctype=b"application/octet-stream",
        extra=[(b"content-length", str(remaining).encode())],
    )
    while remaining > 0:
        part = CHUNK[: min(remaining, len(CHUNK))]
        remaining -= len(part)
        await send({"type": "http.response.body", "body": part, "more_body": remaining > 0})


async def slow(scope: Scope, receive: Receive, send: Send, query: dict[str, str]) -> None:
    await asyncio.sleep(float(query.get("delay", "5")))
    await start(send)
    await send({"type": "http.response.body", "body": b"{}"})


async def stall(scope: Scope, receive: Receive, send: Send, query: dict[str, str]) -> None:
    await start(send, ctype=b"text/event-stream")
    await send({"type": "http.response.body", "body": b"data: first\n\n", "more_body": True})
    await asyncio.sleep(float(query.get("delay", "30")))
    await send({"type": "http.response.body", "body": b""})


async def endless(scope: Scope, receive: Receive, send: Send, query: dict[str, str]) -> None:
    """Streams until the client leaves, then records that it saw the disconnect."""
    tag = query.get("tag", "")
    await start(send, ctype=b"text/event-stream")
    gone = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.create_task(watch())
    while not gone.is_set():
        await send({"type": "http.response.body", "body": b"data: tick\n\n", "more_body": True})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gone.wait(), 0.05)
    watcher.cancel()
    EVENTS.append(f"disconnect:{tag}")


async def events(scope: Scope, receive: Receive, send: Send, query: dict[str, str]) -> None:
    await start(send)
    await send({"type": "http.response.body", "body": json.dumps(EVENTS).encode()})


ROUTES = {
    "sse": sse,
    "download": download,
    "slow": slow,
    "stall": stall,
    "endless": endless,
    "_events": events,
}


if __name__ == "__main__":
    from tests.ports import run_uvicorn

    run_uvicorn(
        app,
        sys.argv[1],
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
