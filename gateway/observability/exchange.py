"""One record per request, on both server paths, feeding the metrics and the request log.

The gateway has two server paths (gateway.http_protocol): bodyless proxied requests are
answered inside the server protocol (`ProxyApp.start`, through a `forward.Client`), the
rest through ASGI. Both are observed from the outside, without hooks in the protocol:

- `ObservedApp` wraps the ASGI application: it sees the request head, every `send`
  message (status, content type, body sizes) and when the call returns;
- `ObservedProxy` stands in for the ProxyApp that the fast path calls (`start`, and
  `begin`/`finish` for a small body) and hands the pipeline an `ObservedClient`, which
  sees `respond`, `relay` (the coroutine path the exchange may continue on) and the
  client leaving while its body or the upstream is awaited;
- `ObservedForwarder` (the ProxyApp's forwarder) learns what the pipeline decided:
  the request id, client id and subject it injected, and when forwarding began;
- `ObservedAuthenticator` counts refused credentials by reason.

Draining (graceful shutdown): once `Observer.drain` is set, an event stream being relayed
sees its client "disconnect" (its `receive` returns `http.disconnect`), which makes the
forwarder close the upstream stream, and then the stream's response is ended cleanly
(the last chunk), so clients see a complete response rather than a reset.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any, cast

from gateway.errors import InvalidRequest, InvalidToken, OAuthError, TemporarilyUnavailable
from gateway.observability.metrics import Metrics
from gateway.observability.requestlog import RequestLog
from gateway.principal import Principal
from gateway.proxy.forward import Client, Outgoing, Upstream
from gateway.proxy.ports import Authenticator

Header = tuple[bytes, bytes]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_DISCONNECT: Message = {"type": "http.disconnect"}
_END: Message = {"type": "http.response.body", "body": b"", "more_body": False}
_OAUTH_ROUTES = {
    "/oauth/token": "oauth_token",
    "/token": "oauth_token",
    "/oauth/authorize": "oauth_authorize",
    "/oauth/authorize/consent": "oauth_authorize",
    "/authorize": "oauth_authorize",
    "/oauth/register": "oauth_register",
    "/register": "oauth_register",
    "/oauth/revoke": "oauth_revoke",
    "/oauth/introspect": "oauth_introspect",
    "/oauth/jwks": "discovery",
}
# The MCP methods labelled by name (anything else is "other"): label values never come
# from request input unchecked.
MCP_METHODS = frozenset(
    {"initialize", "notifications/initialized", "ping", "tools/list", "tools/call",
     "resources/list", "resources/read", "resources/templates/list", "prompts/list",
     "prompts/get", "completion/complete", "logging/setLevel", "notifications/cancelled",
     "notifications/progress", "notifications/roots/list_changed"}
)  # fmt: skip
MAX_TOOL_LABELS = 64


def route_class(path: str) -> str:
    """The route class a request is counted under (a small fixed set)."""
    if path.startswith("/api/"):
        return "rest"
    if path == "/mcp" or path.startswith("/mcp/"):
        return "mcp"
    if path in ("/healthz", "/readyz"):
        return "health"
    if path.startswith("/.well-known/"):
        return "discovery"
    named = _OAUTH_ROUTES.get(path)
    if named is not None:
        return named
    if path.startswith("/oauth/register/"):
        return "oauth_register"
    if path.startswith("/oauth/clients/"):
        return "oauth_clients"
    if path.startswith("/oauth"):
        return "oauth_other"
    return "other"


class Exchange:
    """What is known about one request (a slotted class: one is built per request)."""

    __slots__ = (
        "_route",
        "bytes",
        "client_id",
        "complete",
        "ended",
        "method",
        "no_credentials",
        "path",
        "peer",
        "request_id",
        "started",
        "status",
        "stream",
        "subject",
        "upstream_seconds",
        "upstream_started",
        "wall",
    )

    def __init__(self, method: str, path: str, peer: str) -> None:
        self.started = time.perf_counter()
        self.wall = time.time()
        self.method = method
        self.path = path
        self.peer = peer
        self._route: str | None = None
        self.status = 0
        self.bytes = 0
        self.complete = False
        self.ended = False
        self.stream = False
        self.no_credentials = False
        self.upstream_started = 0.0
        self.upstream_seconds: float | None = None
        self.request_id: bytes | None = None
        self.client_id: bytes | None = None
        self.subject: bytes | None = None

    @property
    def route(self) -> str:
        """The route class (route_class), worked out when first asked: only metrics and
        the JSON log line need it."""
        route = self._route
        if route is None:
            route = self._route = route_class(self.path)
        return route


class Observer:
    """Built once by the composition root; either part (metrics, log) may be off."""

    def __init__(self, metrics: Metrics | None, log: RequestLog | None) -> None:
        self.metrics = metrics
        self.log = log
        self.drain = asyncio.Event()
        self._tools: set[str] = set()

    @property
    def draining(self) -> bool:
        return self.drain.is_set()

    def start_drain(self) -> None:
        self.drain.set()

    def begin(self, method: str, path: str, peer: str) -> Exchange:
        return Exchange(method, path, peer)

    def response_start(self, exchange: Exchange, status: int, headers: Any) -> None:
        exchange.status = status
        if exchange.upstream_started and exchange.upstream_seconds is None:
            exchange.upstream_seconds = time.perf_counter() - exchange.upstream_started
        if status == 401:
            exchange.no_credentials = _no_credentials(headers)
        for name, value in headers:
            if name == b"content-type" and value.startswith(b"text/event-stream"):
                exchange.stream = True
                if self.metrics is not None:
                    self.metrics.streams.inc()
                break

    def forwarded(self, exchange: Exchange, outgoing: Outgoing) -> None:
        if exchange.upstream_started:
            return
        exchange.upstream_started = time.perf_counter()
        if outgoing.request_id is not None:  # what ProxyApp put in the headers, in hand
            exchange.request_id = outgoing.request_id
            identity = outgoing.identity
            if identity:
                exchange.subject, exchange.client_id = identity[0][1], identity[1][1]
            headers: list[Header] = []
        else:
            headers = outgoing.headers
        for name, value in headers:
            if name == b"x-request-id":
                exchange.request_id = value
            elif name == b"x-auth-client-id":
                exchange.client_id = value
            elif name == b"x-auth-subject":
                exchange.subject = value
        if (
            self.metrics is not None
            and exchange.route == "mcp"
            and outgoing.method == "POST"
            and outgoing.body
        ):
            for method, tool in jsonrpc_calls(outgoing.body):
                self.metrics.mcp.labels(*self._mcp_labels(method, tool)).inc()

    def _mcp_labels(self, method: str, tool: str | None) -> tuple[str, str]:
        if method not in MCP_METHODS:
            return "other", ""
        if tool is None:
            return method, ""
        if tool not in self._tools:
            if len(self._tools) >= MAX_TOOL_LABELS or not _is_name(tool):
                return method, "other"
            self._tools.add(tool)
        return method, tool

    def end(self, exchange: Exchange) -> None:
        if exchange.ended:
            return
        exchange.ended = True
        seconds = time.perf_counter() - exchange.started
        if exchange.status == 0:
            exchange.status = 499  # the client left before a response began
        metrics = self.metrics
        if metrics is not None:
            metrics.request(exchange.route, exchange.status, seconds)
            if exchange.stream:
                metrics.streams.dec()
            if exchange.upstream_started:
                upstream = exchange.upstream_seconds
                if upstream is None:
                    upstream = seconds
                metrics.upstream(upstream, exchange.status)
            if exchange.route in ("rest", "mcp", "other"):
                if exchange.status == 403:
                    metrics.auth_failure("insufficient_scope")
                elif exchange.no_credentials:
                    metrics.auth_failure("missing")
        log = self.log
        if log is not None:
            log.sink.add(log.line(exchange, seconds))

    async def call(self, exchange: Exchange, run: Callable[[Receive, Send], Awaitable[None]],
                   receive: Receive, send: Send) -> None:  # fmt: skip
        """Run one ASGI-shaped exchange, observing its messages; ends the record."""
        io = ObservedIO(self, exchange, receive, send)
        try:
            await run(io.receive, io.send)
        except BaseException:
            if exchange.status == 0:
                exchange.status = 500
            raise
        else:
            if exchange.stream and not exchange.complete and self.drain.is_set():
                # Drained: the upstream stream was closed for us; end the response cleanly.
                exchange.complete = True
                await send(_END)
        finally:
            self.end(exchange)


class ObservedIO:
    """The receive/send pair of one observed exchange."""

    __slots__ = ("_receive", "_send", "exchange", "observer")

    def __init__(
        self, observer: Observer, exchange: Exchange, receive: Receive, send: Send
    ) -> None:
        self.observer = observer
        self.exchange = exchange
        self._receive = receive
        self._send = send

    async def send(self, message: Message) -> None:
        exchange = self.exchange
        kind = message["type"]
        if kind == "http.response.start":
            self.observer.response_start(exchange, message["status"], message.get("headers", ()))
        elif kind == "http.response.body":
            exchange.bytes += len(message.get("body", b""))
            if not message.get("more_body", False):
                exchange.complete = True
        await self._send(message)

    async def receive(self) -> Message:
        if not self.exchange.stream:
            return await self._receive()
        drain = self.observer.drain
        if drain.is_set():
            return _DISCONNECT
        message = asyncio.ensure_future(self._receive())
        stop = asyncio.ensure_future(drain.wait())
        try:
            await asyncio.wait((message, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if message.done():
            return message.result()
        message.cancel()
        return _DISCONNECT


class ObservedApp:
    """The ASGI application, observed (the ASGI server path)."""

    def __init__(self, app: ASGIApp, observer: Observer) -> None:
        self.app = app
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        exchange = self.observer.begin(scope["method"], scope["path"], client[0] if client else "")
        await self.observer.call(exchange, partial(self.app, scope), receive, send)


class ObservedClient:
    """A fast-path exchange's `forward.Client`, observed."""

    __slots__ = ("callback", "exchange", "inner", "observer", "writable")

    def __init__(self, inner: Client, exchange: Exchange, observer: Observer) -> None:
        self.inner = inner
        self.exchange = exchange
        self.observer = observer
        self.callback: Callable[[], None] | None = None
        self.writable = inner.writable  # nothing to observe: the inner one, no extra call

    def respond(self, status: int, headers: list[Header], body: bytes) -> None:
        # Observer.response_start for a whole response (an event stream that is already
        # complete is not counted as an open stream).
        exchange = self.exchange
        exchange.status = status
        if exchange.upstream_started and exchange.upstream_seconds is None:
            exchange.upstream_seconds = time.perf_counter() - exchange.upstream_started
        if status == 401:
            exchange.no_credentials = _no_credentials(headers)
        exchange.bytes += len(body)
        exchange.complete = True
        self.callback = None  # a whole response: the on_gone callback is dropped
        self.inner.respond(status, headers, body)
        self.observer.end(exchange)

    def relay(self, run: Callable[[Receive, Send], Awaitable[None]]) -> None:
        self.inner.relay(partial(self.observer.call, self.exchange, run))

    def on_gone(self, callback: Callable[[], None] | None) -> None:
        self.callback = callback
        self.inner.on_gone(None if callback is None else self._gone)

    def _gone(self) -> None:
        callback = self.callback
        if callback is not None:
            callback()
        self.observer.end(self.exchange)


class ObservedProxy:
    """What the fast path calls instead of `ProxyApp.start`, `begin` and `finish`."""

    def __init__(self, proxy: Any, observer: Observer) -> None:
        self.proxy = proxy
        self.observer = observer

    def start(self, method: str, raw_path: bytes, query: bytes, headers: list[Header],
              peer: str, found: Any, client: Client) -> None:  # fmt: skip
        exchange = Exchange(method, raw_path.decode("latin-1"), peer)
        try:
            self.proxy.start(
                method, raw_path, query, headers, peer, found,
                ObservedClient(client, exchange, self.observer),
            )  # fmt: skip
        except Exception:
            exchange.status = exchange.status or 500
            self.observer.end(exchange)
            raise

    def begin(self, method: str, raw_path: bytes, query: bytes, headers: list[Header],
              peer: str, found: Any, client: Client) -> Any:  # fmt: skip
        """`ProxyApp.begin` (a small body still to come), observed; a client that leaves
        before its body is whole ends the record (499)."""
        exchange = self.observer.begin(method, raw_path.decode("latin-1"), peer)
        observed = ObservedClient(client, exchange, self.observer)
        try:
            admitted = self.proxy.begin(method, raw_path, query, headers, peer, found, observed)
        except Exception:
            exchange.status = exchange.status or 500
            self.observer.end(exchange)
            raise
        if admitted is None:
            return None
        observed.on_gone(_nothing)
        return admitted, observed

    def finish(self, pending: Any, body: bytes, client: Client) -> None:
        admitted, observed = pending
        observed.on_gone(None)
        try:
            self.proxy.finish(admitted, body, observed)
        except Exception:
            observed.exchange.status = observed.exchange.status or 500
            self.observer.end(observed.exchange)
            raise


def _nothing() -> None:
    return None


def _no_credentials(headers: list[Header]) -> bool:
    """RFC 6750 §3.1: a 401 whose challenge has no error code answers a request that
    brought no credentials (refused ones are counted by ObservedAuthenticator)."""
    return not any(name == b"www-authenticate" and b"error=" in value for name, value in headers)


class ObservedForwarder:
    """The proxy's Forwarder, telling the observer what is forwarded and when (a wrapper:
    the fast path's continuations inside the Forwarder call the real one directly)."""

    def __init__(self, inner: Upstream, observer: Observer) -> None:
        self.inner = inner
        self.observer = observer

    def start(self, request: Outgoing, client: Client) -> None:
        if client.__class__ is ObservedClient:
            self.observer.forwarded(client.exchange, request)
        self.inner.start(request, client)

    async def __call__(self, request: Outgoing, receive: Receive, send: Send) -> None:
        io = getattr(send, "__self__", None)
        if isinstance(io, ObservedIO):
            self.observer.forwarded(io.exchange, request)
        await self.inner(request, receive, send)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def observed_forwarder(inner: Upstream, observer: Observer) -> Upstream:
    return cast(Upstream, ObservedForwarder(inner, observer))


class ObservedAuthenticator:
    """The proxy's Authenticator, counting refused credentials by reason."""

    def __init__(self, inner: Authenticator, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics

    def authenticate(
        self, authorization: bytes | None, api_key_header: bytes | None, *, query: bytes = b""
    ) -> Principal | None:
        try:
            principal = self.inner.authenticate(authorization, api_key_header, query=query)
        except InvalidToken as exc:
            self.metrics.auth_failure(failure_reason(exc.description))
            raise
        except TemporarilyUnavailable:
            self.metrics.auth_failure("unavailable")
            raise
        except InvalidRequest:
            self.metrics.auth_failure("invalid_request")
            raise
        except OAuthError:
            self.metrics.auth_failure("invalid_token")
            raise
        return principal  # None: no credentials, counted when the 401 goes out


def failure_reason(description: str) -> str:
    text = description.lower()
    if "revoked" in text:
        return "revoked"
    if "expired" in text:
        return "expired"
    if "signature" in text or "signing key" in text:
        return "bad_signature"
    if "audience" in text:
        return "wrong_audience"
    if "api key" in text:
        return "invalid_api_key"
    return "invalid_token"


def jsonrpc_calls(body: bytes) -> list[tuple[str, str | None]]:
    """(method, tool name) of each JSON-RPC request in an /mcp POST body; [] if none."""
    import json

    try:
        document = json.loads(body)
    except ValueError:
        return []
    messages = document if isinstance(document, list) else [document]
    calls: list[tuple[str, str | None]] = []
    for message in messages[:100]:
        if not isinstance(message, dict) or not isinstance(message.get("method"), str):
            continue
        method: str = message["method"]
        tool = None
        params = message.get("params")
        if method == "tools/call" and isinstance(params, dict):
            name = params.get("name")
            tool = name if isinstance(name, str) else None
        calls.append((method, tool))
    return calls


def _is_name(tool: str) -> bool:
    return 0 < len(tool) <= 64 and all(c.isalnum() or c in "_-./" for c in tool)
