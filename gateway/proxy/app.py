"""The protected reverse proxy: the gateway's hot path, as a raw ASGI pipeline.

canonical path (P2) → policy → authenticate → scopes (D6) → JSON-RPC tool scopes for
/mcp → strip + inject headers (P1, P6, J3) → stream to the upstream (P3, P4).

Two entries share these steps (`_admit`, `_check_tools`, `_outgoing`): the ASGI app
(`__call__`) and the server protocol's fast path (gateway.http_protocol.fast_proxy_protocol),
which calls `start` for a request without a body, and `begin` at the head and `finish`
with the body in hand for one with a small body of known length.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from gateway import cors
from gateway.errors import (
    AccessDenied,
    GatewayError,
    InternalError,
    InvalidRequest,
    InvalidToken,
    OAuthError,
    PayloadTooLarge,
    TooManyRequests,
    render,
)
from gateway.net import is_trusted, parse_networks
from gateway.origins import OriginPolicy
from gateway.principal import Principal
from gateway.proxy.errors import ClientGone
from gateway.proxy.forward import Client, Forwarder, Outgoing, Upstream
from gateway.proxy.headers import (
    Forwarding,
    IdentityCache,
    RequestIds,
    upstream_headers,
)
from gateway.proxy.paths import canonical_path
from gateway.proxy.ports import (
    Authenticator,
    Challenges,
    Decision,
    Header,
    Policy,
    Reply,
    SessionAuth,
)
from gateway.proxy.replies import Answer, raw_answer, send_answer
from gateway.proxy.upstream import UpstreamPool
from gateway.ratelimit import FailureCounter, client_address, limit_key
from gateway.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_INSPECTED_BODY = 4 * 1024 * 1024
_ROUTE_LIMIT = 4096
_ROUTE_KEY_BYTES = 256
# A body on these has no defined meaning (RFC 9110 §9.3): refused, never forwarded.
BODYLESS_METHODS = frozenset({"GET", "HEAD", "DELETE"})


class Denied(InternalError):
    """The pipeline stops with a ready answer (401, 403, a sign-in redirect or an
    unmatched route), sent as it is."""

    def __init__(self, reply: Reply) -> None:
        super().__init__("denied")
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
        sessions: SessionAuth | None = None,
        upstream: Upstream | None = None,
    ) -> None:
        self.forward: Upstream = upstream if upstream is not None else _forwarder(settings)
        self.authenticator = authenticator
        self.challenges = challenges
        self.policy = policy
        self.max_inspected_body = max_inspected_body
        self.trusted = parse_networks(settings.trusted_proxies)
        self.failures = FailureCounter(settings.rate_limit_per_minute)
        self.proto = b"https" if settings.https_enabled else b"http"
        self.identity = IdentityCache()
        self.request_ids = RequestIds()
        # The upstream's own credential (MCP_GATEWAY_UPSTREAM_API_KEY), on every request
        # either entry forwards; the client's credentials are stripped before (J3).
        key = settings.upstream_api_key
        self.upstream_credential: list[Header] = (
            [(b"authorization", b"Bearer " + key.encode("ascii"))] if key else []
        )
        # Signed-in people's browser sessions, for routes the policy marks `browser`.
        self.sessions = sessions
        self.origins = OriginPolicy(
            settings.issuer, settings.allowed_origins, loopback_dev=settings.issuer_is_loopback
        )
        # (method, raw path) → (canonical path, the policy's decision): both pure
        # functions of the key (the policy does not change while serving), so a path
        # seen before skips them. Bounded in entries and key length; refused (invalid)
        # paths raise before they are remembered.
        self._routes: dict[tuple[str, bytes], tuple[str, Decision | None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        headers: list[Header] = scope["headers"]
        request = _Request(
            scope["method"],
            scope.get("raw_path") or scope["path"].encode("utf-8"),
            scope.get("query_string", b""),
            headers,
            client[0] if client else "",
            scan(headers),
        )
        if not self.origins.allows(request.found.origin):
            await send_answer(send, _foreign_origin())
            return
        cors_headers = cors.response_headers(request.found.origin)
        if (preflight := _preflight(request)) is not None:
            await send_answer(send, preflight)
            return
        try:
            await self._handle(request, cors_headers, receive, send)
        except Denied as denied:
            await send_answer(send, raw_answer(denied.reply, cors_headers))
        except ClientGone:
            return
        except GatewayError as exc:
            await send_answer(send, render(exc, extra=cors_headers))

    def start(
        self,
        method: str,
        raw_path: bytes,
        query: bytes,
        headers: list[Header],
        peer: str,
        found: Found,
        client: Client,
    ) -> None:
        """The server protocol's fast path (gateway.http_protocol): the same pipeline
        for a request without a body (`found = scan(headers)`, `found.has_body` false),
        answered through `client`, the exchange started by `Forwarder.start`."""
        admitted = self.begin(method, raw_path, query, headers, peer, found, client)
        if admitted is not None:
            self.finish(admitted, b"", client)

    def begin(
        self,
        method: str,
        raw_path: bytes,
        query: bytes,
        headers: list[Header],
        peer: str,
        found: Found,
        client: Client,
    ) -> Admitted | None:
        """The fast path's admission, for a request without a body (`start`) or one whose
        small body (`found.content_length` bytes, gateway.http_protocol) is still to
        come: the same steps as the ASGI entry up to the body, at the same moment
        (before it is read). Answers `client` and returns None when the request stops
        here (foreign Origin, preflight, 400, 401, 403); else `finish` is called with the
        body once it is in hand."""
        request = _Request(method, raw_path, query, headers, peer, found)
        cors_headers: list[Header] = []
        if found.origin is not None:  # a browser: Origin rule, preflight, CORS headers
            if not self.origins.allows(found.origin):
                client.respond(*_foreign_origin())
                return None
            cors_headers = cors.response_headers(found.origin)
            if (preflight := _preflight(request)) is not None:
                client.respond(*preflight)
                return None
        try:
            if found.has_body and method in BODYLESS_METHODS:
                raise InvalidRequest(f"a {method} request must not have a body")
            path, decision, principal = self._admit(request)
        except Denied as denied:
            client.respond(*raw_answer(denied.reply, cors_headers))
            return None
        except GatewayError as exc:
            client.respond(*render(exc, extra=cors_headers))
            return None
        return Admitted(request, path, decision, principal, cors_headers)

    def finish(self, admitted: Admitted, body: bytes, client: Client) -> None:
        """The rest of the pipeline for an admitted request and its whole body: the
        JSON-RPC tool scopes on the bytes in hand (once), then the exchange."""
        request, decision, principal = admitted.request, admitted.decision, admitted.principal
        cors_headers = admitted.cors_headers
        try:
            if (
                decision.inspect_jsonrpc
                and request.found.has_body
                and request.method == "POST"
                and principal is not None
            ):
                if len(body) > self.max_inspected_body:
                    raise PayloadTooLarge("the JSON-RPC request body is too large")
                self._check_tools(decision, principal, body)
            outgoing = self._outgoing(request, admitted.path, principal, body, cors_headers)
        except Denied as denied:
            client.respond(*raw_answer(denied.reply, cors_headers))
            return
        except GatewayError as exc:
            client.respond(*render(exc, extra=cors_headers))
            return
        self.forward.start(outgoing, client)

    async def aclose(self) -> None:
        await self.forward.aclose()

    async def _handle(
        self, request: _Request, cors_headers: list[Header], receive: Receive, send: Send
    ) -> None:
        method, found = request.method, request.found
        if found.has_body and method in BODYLESS_METHODS:
            raise InvalidRequest(f"a {method} request must not have a body")
        path, decision, principal = self._admit(request)
        body: bytes | None = None
        if not found.has_body:
            body = b""
        elif decision.inspect_jsonrpc and method == "POST" and principal is not None:
            body = await self._read_body(receive, found.content_length)
            self._check_tools(decision, principal, body)
        outgoing = self._outgoing(request, path, principal, body, cors_headers)
        await self.forward(outgoing, receive, send)

    def _admit(self, request: _Request) -> tuple[str, Decision, Principal | None]:
        """P2 canonical path, the policy's decision and, unless public, the principal
        (D5/D6); raises Denied or OAuthError."""
        path, decision = self.route(request.method, request.raw_path)
        if decision is None:
            raise Denied(self.challenges.denied())
        principal = None if decision.public else self._authenticate(request, decision)
        return path, decision, principal

    def route(self, method: str, raw_path: bytes) -> tuple[str, Decision | None]:
        """P2's canonical path and the policy's decision for it (None: deny), or
        InvalidPath; remembered for paths up to _ROUTE_KEY_BYTES (see __init__)."""
        key = (method, raw_path)
        routed = self._routes.get(key)
        if routed is None:
            path = canonical_path(raw_path)
            routed = path, self.policy.match(method, path)
            if len(raw_path) <= _ROUTE_KEY_BYTES:
                if len(self._routes) >= _ROUTE_LIMIT:
                    self._routes.clear()
                self._routes[key] = routed
        return routed

    def _outgoing(
        self,
        request: _Request,
        path: str,
        principal: Principal | None,
        body: bytes | None,
        cors_headers: list[Header],
    ) -> Outgoing:
        """The request as it goes upstream: same canonical path, P1/P6/J3 headers."""
        query, found = request.query, request.found
        target = path.encode("ascii") + b"?" + query if query else path.encode("ascii")
        identity = None if principal is None else self.identity(principal)
        headers, request_id = upstream_headers(
            request.headers,
            principal,
            self._forwarding(request.peer, found),
            identity=identity,
            new_id=self.request_ids,
        )
        if self.upstream_credential:
            headers += self.upstream_credential
        return Outgoing(
            request.method, target, headers, body, found.content_length, cors_headers,
            request_id=request_id, identity=identity,
        )  # fmt: skip

    def _authenticate(self, request: _Request, decision: Decision) -> Principal:
        # Failures are counted and, past the limit, refused; a valid credential from the
        # same address is never locked out (the limit slows guessing, not its victims).
        found = request.found
        try:
            principal = self.authenticator.authenticate(
                found.authorization, found.api_key, query=request.query
            )
        except InvalidToken as exc:
            address = self._failures_key(request)
            if (wait := self.failures.retry_after(address)) is not None:
                raise TooManyRequests(
                    wait, "too many failed credentials from this address"
                ) from None
            self.failures.record(address)
            raise Denied(self.challenges.unauthorized(decision.scopes, exc)) from None
        except OAuthError as exc:
            raise Denied(self.challenges.unauthorized(decision.scopes, exc)) from None
        if principal is None and found.cookie is not None and decision.browser:
            principal = self._session(request)
        if principal is None:
            if decision.browser and self.sessions is not None and _wants_page(request):
                raise Denied(_SignIn(request.raw_path, request.query))
            raise Denied(self.challenges.unauthorized(decision.scopes, None))
        if not decision.scopes <= principal.scopes:
            raise Denied(self.challenges.forbidden(decision.scopes))
        return principal

    def _session(self, request: _Request) -> Principal | None:
        """A person's browser session on a `browser` route (gateway.people.session)."""
        if self.sessions is None:
            return None
        found = request.found
        try:
            return self.sessions.for_request(found.cookie, request.method, found.origin)
        except OAuthError as exc:
            raise Denied(render(exc)) from None

    def _failures_key(self, request: _Request) -> str:
        forwarded = [
            value.decode("latin-1") for name, value in request.headers if name == b"x-forwarded-for"
        ]
        return limit_key(client_address(request.peer, forwarded, self.trusted))

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

    def _forwarding(self, peer: str, found: Found) -> Forwarding:
        trusted = bool(self.trusted) and is_trusted(peer, self.trusted)
        return Forwarding(peer.encode(), self.proto, found.host, trusted)


def _wants_page(request: _Request) -> bool:
    """A browser navigating (GET for HTML), not a script or an API client."""
    if request.method != "GET":
        return False
    accept = next((v for n, v in request.headers if n == b"accept"), b"")
    return b"text/html" in accept


def _forwarder(settings: Settings) -> Forwarder:
    """The pooled HTTP/1.1 client for `settings.upstream`."""
    origin = urlsplit(settings.upstream)
    host, port = origin.hostname or "127.0.0.1", origin.port or 80
    pool = UpstreamPool(host, port, connect_timeout=settings.upstream_connect_timeout)
    return Forwarder(
        pool,
        host=origin.netloc.encode("ascii"),
        header_timeout=settings.upstream_header_timeout,
        idle_timeout=settings.upstream_idle_timeout,
    )


class _SignIn:
    """303 to the people sign-in (gateway.people), back to this page afterwards."""

    status = 303

    def __init__(self, raw_path: bytes, query: bytes) -> None:
        target = raw_path + (b"?" + query if query else b"")
        location = b"/oauth/login?" + urlencode({"return_to": target.decode("latin-1")}).encode()
        self.headers: list[Header] = [
            (b"location", location),
            (b"cache-control", b"no-store"),
            (b"content-length", b"0"),
        ]
        self.body = b""


def _preflight(request: _Request) -> Answer | None:
    """P5: a CORS preflight is answered here, without credentials."""
    origin = request.found.origin
    if origin is not None and cors.is_preflight(request.method, request.headers):
        return raw_answer(cors.preflight_response(origin), [])
    return None


def _foreign_origin() -> Answer:
    """403 for a browser origin that may not call the proxied routes (MCP transport:
    servers MUST validate Origin); no CORS headers, so the page cannot read it."""
    return render(AccessDenied("this Origin may not call the gateway"))


class Admitted:
    """A fast-path request that passed admission, waiting for its body (`begin`)."""

    __slots__ = ("cors_headers", "decision", "path", "principal", "request")

    def __init__(
        self,
        request: _Request,
        path: str,
        decision: Decision,
        principal: Principal | None,
        cors_headers: list[Header],
    ) -> None:
        self.request = request
        self.path = path
        self.decision = decision
        self.principal = principal
        self.cors_headers = cors_headers


class _Request:
    """The parts of one request the pipeline reads (a slotted class: built per request)."""

    __slots__ = ("found", "headers", "method", "peer", "query", "raw_path")

    def __init__(
        self,
        method: str,
        raw_path: bytes,
        query: bytes,
        headers: list[Header],
        peer: str,
        found: Found,
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self.query = query
        self.headers = headers
        self.peer = peer
        self.found = found


class Found:
    """The few request headers the pipeline reads, found in one pass."""

    __slots__ = (
        "api_key",
        "authorization",
        "chunked",
        "content_length",
        "cookie",
        "has_body",
        "host",
        "origin",
    )

    def __init__(self) -> None:
        self.authorization: bytes | None = None
        self.api_key: bytes | None = None
        self.content_length: bytes | None = None
        self.origin: bytes | None = None
        self.cookie: bytes | None = None
        self.host = b""
        self.has_body = False
        self.chunked = False  # a Transfer-Encoding header came


# Header name → what scan does with it: one dict look-up per header, not a chain of
# comparisons (most headers are none of these).
_AUTHORIZATION, _API_KEY, _HOST, _LENGTH, _TRANSFER, _ORIGIN, _COOKIE = range(7)
_SCANNED = {
    b"authorization": _AUTHORIZATION,
    b"x-api-key": _API_KEY,
    b"host": _HOST,
    b"content-length": _LENGTH,
    b"transfer-encoding": _TRANSFER,
    b"origin": _ORIGIN,
    b"cookie": _COOKIE,
}


def scan(headers: list[Header]) -> Found:
    found = Found()
    scanned = _SCANNED
    for name, value in headers:
        kind = scanned.get(name)
        if kind is None:
            continue
        if kind == _AUTHORIZATION:
            found.authorization = value
        elif kind == _HOST:
            found.host = value
        elif kind == _LENGTH:
            # The parser accepted it, so digits only; forwarded in canonical form ("010"
            # and "10" are one length, but not to every upstream).
            length = int(value)
            found.content_length = b"%d" % length
            found.has_body = length != 0
        elif kind == _API_KEY:
            found.api_key = value
        elif kind == _TRANSFER:
            found.has_body = found.chunked = True
        elif kind == _ORIGIN:
            found.origin = value
        else:
            found.cookie = value if found.cookie is None else found.cookie + b"; " + value
    return found
