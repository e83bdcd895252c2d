"""Raw ASGI responses for the answers the proxy gives itself (no Starlette objects)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gateway.errors import NO_STORE, OAuthError
from gateway.proxy.ports import Header, Reply

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_NO_STORE = [(k.lower().encode(), v.encode()) for k, v in NO_STORE.items()]


async def send_reply(send: Send, status: int, headers: list[Header], body: bytes) -> None:
    if not any(name.lower() == b"content-length" for name, _ in headers):
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_raw(send: Send, reply: Reply, extra: list[Header]) -> None:
    await send_reply(send, reply.status, [*reply.headers, *extra], reply.body)


async def send_error(send: Send, exc: OAuthError, extra: list[Header]) -> None:
    body = json.dumps(exc.body()).encode()
    headers = [(b"content-type", b"application/json"), *_NO_STORE]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    await send_reply(send, exc.status_code, [*headers, *extra], body)
