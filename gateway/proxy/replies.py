"""The answers the proxy gives itself, as plain (status, headers, body) triples, and raw
ASGI senders for them (no Starlette objects; errors come from `gateway.errors.render`).
The server protocol's fast path writes the same triples straight to the connection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gateway.proxy.ports import Header, Reply

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Answer = tuple[int, list[Header], bytes]


def framed(status: int, headers: list[Header], body: bytes) -> Answer:
    """The answer with a Content-Length header (added unless present)."""
    if not any(name.lower() == b"content-length" for name, _ in headers):
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    return status, headers, body


def raw_answer(reply: Reply, extra: list[Header]) -> Answer:
    return framed(reply.status, [*reply.headers, *extra], reply.body)


async def send_answer(send: Send, answer: Answer) -> None:
    status, headers, body = answer
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
