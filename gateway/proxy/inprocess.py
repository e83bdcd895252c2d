"""An upstream that is an ASGI application in this process (`create_app(upstream=...)`).

The proxy pipeline runs unchanged (path, policy, credentials, header rewrite, CORS);
only the last hop is a call instead of an HTTP/1.1 exchange on a socket, so tests of
what the gateway decides run in-process, and an embedding application can put the
gateway in front of its own ASGI app. Response headers get the same filtering as from
a socket (hop-by-hop and `server`/`date` dropped, P1). Framing, timeouts and the
pooled client are `gateway.proxy.forward.Forwarder`'s and are tested on real sockets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any
from urllib.parse import unquote

from gateway.errors import GatewayError, render
from gateway.proxy.errors import BadGateway, ClientGone
from gateway.proxy.forward import Client, Outgoing
from gateway.proxy.headers import response_headers
from gateway.proxy.replies import send_answer

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Message, Receive, Send], Awaitable[None]]


class ASGIUpstream:
    def __init__(self, app: ASGIApp, *, host: bytes = b"upstream") -> None:
        self.app = app
        self.host = host

    def start(self, request: Outgoing, client: Client) -> None:
        client.relay(partial(self.relay, request))

    async def relay(self, request: Outgoing, receive: Receive, send: Send) -> None:
        try:
            await self(request, receive, send)
        except ClientGone:
            return
        except GatewayError as exc:
            await send_answer(send, render(exc, extra=request.response_extra))

    async def __call__(self, request: Outgoing, receive: Receive, send: Send) -> None:
        path, _, query = request.target.partition(b"?")
        scope: Message = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": "http",
            "path": unquote(path.decode("latin-1")),
            "raw_path": path,
            "query_string": query,
            "root_path": "",
            "headers": [(b"host", self.host), *request.headers],
            "client": ("127.0.0.1", 0),
            "server": (self.host.decode("latin-1"), 80),
        }
        started = False

        async def upstream_receive() -> Message:
            if request.body is not None:
                body, request.body = request.body, b""
                return {"type": "http.request", "body": body, "more_body": False}
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            return message

        async def upstream_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = response_headers(message.get("headers", [])) + request.response_extra
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, upstream_receive, upstream_send)
        except ClientGone:
            raise
        except Exception as exc:
            if started:
                raise  # too late for a 502: the response is cut, as from a socket
            raise BadGateway(f"the upstream application failed: {type(exc).__name__}") from exc
        if not started:
            raise BadGateway("the upstream application sent no response")

    async def aclose(self) -> None:
        return None
