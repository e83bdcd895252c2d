"""The protected reverse proxy: the gateway's hot path, as a raw ASGI pipeline.

canonical path (P2) → policy → authenticate → scopes (D6) → JSON-RPC tool scopes for
/mcp → strip + inject headers (P1, P6, J3) → stream to the upstream (P3, P4).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from gateway import cors
from gateway.errors import (
    InvalidRequest,
    InvalidToken,
    OAuthError,
    PayloadTooLarge,
    TooManyRequests,
)
from gateway.principal import Principal
from gateway.proxy.errors import ClientGone
from gateway.proxy.forward import Forwarder, Outgoing
from gateway.proxy.headers import (
    Forwarding,
    IdentityCache,
    RequestIds,
    is_trusted,
    parse_networks,
    request_headers,
)
from gateway.proxy.paths import canonical_path
from gateway.proxy.ports import Authenticator, Challenges, Decision, Header, Policy
from gateway.proxy.replies import send_error, send_raw
from gateway.proxy.upstream import UpstreamPool
from gateway.ratelimit import FailureCounter, client_address, limit_key
from gateway.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_INSPECTED_BODY = 4 * 1024 * 1024


class Denied(Exception):
    """The pipeline stops with a ready answer (401, 403 or an unmatched route)."""

    def __init__(self, reply: Any) -> None:
        self.reply = reply


class ProxyApp:
    def __init__(
        self,
        settings: Settings,
        *,
        authenticator: Authenticator,
        challenges: Challenges,
        policy: Policy,
        max_inspected_body: int = MAX_INSPECTED_BODY,
    ) -> None:
        origin = urlsplit(settings.upstream)
        host, port = origin.hostname or "127.0.0.1", origin.port or 80
        self.pool = UpstreamPool(host, port, connect_timeout=settings.upstream_connect_timeout)
        self.forward = Forwarder(
            self.pool,
            host=origin.netloc.encode("ascii"),
            header_timeout=settings.upstream_header_timeout,
            idle_timeout=settings.upstream_idle_timeout,
        )
        self.authenticator = authenticator
        self.challenges = challenges
        self.policy = policy
        self.max_inspected_body = max_inspected_body
        self.trusted = parse_networks(settings.trusted_proxies)
        self.failures = FailureCounter(settings.rate_limit_per_minute)
        self.proto = b"https" if settings.https_enabled else b"http"
        self.identity = IdentityCache()
        self.request_ids = RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = _scan(scope["headers"])
        cors_headers = cors.response_headers(found.origin)
        if found.origin is not None and cors.is_preflight(scope["method"], scope["headers"]):
            await send_raw(send, cors.preflight_response(), [])
            return
        try:
            await self._handle(scope, found, cors_headers, receive, send)
        except Denied as denied:
            await send_raw(send, denied.reply, cors_headers)
        except OAuthError as exc:
            await send_error(send, exc, cors_headers)
        except ClientGone:
            return

    async def aclose(self) -> None:
        await self.pool.aclose()

    async def _handle(
        self, scope: Scope, found: _Found, cors_headers: list[Header], receive: Receive, send: Send
    ) -> None:
        method: str = scope["method"]
        path = canonical_path(scope.get("raw_path") or scope["path"].encode("utf-8"))
        decision = self.policy.match(method, path)
        if decision is None:
            raise Denied(self.challenges.denied())
        query: bytes = scope.get("query_string", b"")
        principal = None if decision.public else self._authenticate(scope, decision, found, query)
        body: bytes | None = None
        if not found.has_body:
            body = b""
        elif decision.inspect_jsonrpc and method == "POST" and principal is not None:
            body = await self._read_body(receive, found.content_length)
            self._check_tools(decision, principal, body)
        target = path.encode("ascii") + b"?" + query if query else path.encode("ascii")
        headers = request_headers(
            scope["headers"],
            principal,
            self._forwarding(scope, found),
            identity=None if principal is None else self.identity(principal),
            new_id=self.request_ids,
        )
        outgoing = Outgoing(method, target, headers, body, found.content_length, cors_headers)
        await self.forward(outgoing, receive, send)

    def _authenticate(
        self, scope: Scope, decision: Decision, found: _Found, query: bytes
    ) -> Principal:
        address = self._failures_key(scope) if self.failures.active else None
        if address is not None and (wait := self.failures.retry_after(address)) is not None:
            raise TooManyRequests(wait, "too many failed credentials from this address")
        try:
            principal = self.authenticator.authenticate(
                found.authorization, found.api_key, query=query
            )
        except InvalidToken as exc:
            self.failures.record(address or self._failures_key(scope))
            raise Denied(self.challenges.unauthorized(decision.scopes, exc)) from None
        except OAuthError as exc:
            raise Denied(self.challenges.unauthorized(decision.scopes, exc)) from None
        if principal is None:
            raise Denied(self.challenges.unauthorized(decision.scopes, None))
        if not decision.scopes <= principal.scopes:
            raise Denied(self.challenges.forbidden(decision.scopes))
        return principal

    def _failures_key(self, scope: Scope) -> str:
        client = scope.get("client")
        peer = client[0] if client else ""
        forwarded = [
            value.decode("latin-1")
            for name, value in scope["headers"]
            if name == b"x-forwarded-for"
        ]
        return limit_key(client_address(peer, forwarded, self.trusted))

    def _check_tools(self, decision: Decision, principal: Principal, body: bytes) -> None:
        try:
            required = self.policy.jsonrpc_scopes(body, decision.scopes)
        except ValueError as exc:
            raise InvalidRequest(f"malformed JSON-RPC body: {exc}") from None
        if not required <= principal.scopes:
            raise Denied(self.challenges.forbidden(required))

    async def _read_body(self, receive: Receive, declared: bytes | None) -> bytes:
        if declared is not None and int(declared) > self.max_inspected_body:
            raise PayloadTooLarge("the JSON-RPC request body is too large")
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_inspected_body:
                raise PayloadTooLarge("the JSON-RPC request body is too large")
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)

    def _forwarding(self, scope: Scope, found: _Found) -> Forwarding:
        client = scope.get("client")
        peer = client[0] if client else ""
        trusted = is_trusted(peer, self.trusted)
        return Forwarding(peer.encode(), self.proto, found.host, trusted)


class _Found:
    """The few request headers the pipeline reads, found in one pass."""

    __slots__ = ("api_key", "authorization", "content_length", "has_body", "host", "origin")

    def __init__(self) -> None:
        self.authorization: bytes | None = None
        self.api_key: bytes | None = None
        self.content_length: bytes | None = None
        self.origin: bytes | None = None
        self.host = b""
        self.has_body = False


def _scan(headers: list[Header]) -> _Found:
    found = _Found()
    for name, value in headers:
        if name == b"authorization":
            found.authorization = value
        elif name == b"x-api-key":
            found.api_key = value
        elif name == b"host":
            found.host = value
        elif name == b"content-length":
            found.content_length = value
            found.has_body = value != b"0"
        elif name == b"transfer-encoding":
            found.has_body = True
        elif name == b"origin":
            found.origin = value
    return found
