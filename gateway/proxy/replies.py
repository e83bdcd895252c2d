"""The answers the proxy gives itself, as plain (status, headers, body) triples, and raw
ASGI senders for them (no Starlette objects). The server protocol's fast path writes
the same triples straight to the connection."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gateway.errors import NO_STORE, OAuthError
from gateway.proxy.ports import Header, Reply

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Answer = tuple[int, list[Header], bytes]
_NOSNIFF = (b"x-content-type-options", b"nosniff")
_NO_STORE = [(k.lower().encode(), v.encode()) for k, v in NO_STORE.items()]


def framed(status: int, headers: list[Header], body: bytes) -> Answer:
    """The answer with a Content-Length header (added unless present)."""
    if not any(name.lower() == b"content-length" for name, _ in headers):
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    return status, headers, body


def raw_answer(reply: Reply, extra: list[Header]) -> Answer:
    return framed(reply.status, [*reply.headers, *extra], reply.body)


def error_answer(exc: OAuthError, extra: list[Header]) -> Answer:
    """An OAuthError as RFC JSON (the same shape as the authorization server's)."""
    body = json.dumps(exc.body()).encode()
    headers = [(b"content-type", b"application/json"), _NOSNIFF, *_NO_STORE]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    return framed(exc.status_code, [*headers, *extra], body)


async def send_answer(send: Send, answer: Answer) -> None:
    status, headers, body = answer
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
