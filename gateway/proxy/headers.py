"""PROTOCOL P1, P6, J3: which request headers reach the upstream, and which come back.

Client-sent identity headers are recognised after lower-casing and mapping `_` and `.`
to `-` (servers such as Starlette, PHP or CGI gateways treat those spellings as the same
header), so `X_Auth_Subject` or `x.auth.subject` cannot smuggle an identity past the
strip. Hop-by-hop headers (RFC 9110 §7.6.1) and every header the client names in
`Connection` are dropped. Credentials (`Authorization`, `X-API-Key`) are never
forwarded (J3), nor method or URL override headers (`X-HTTP-Method-Override`,
`X-Original-URL`, ...). `X-Forwarded-*` from the peer is kept and appended to only when the
peer is a configured trusted proxy (P6); otherwise the gateway's own values replace it.

`X-Request-Id`: a client-sent id is kept when it is a sane token (1-128 characters of
`[A-Za-z0-9._-]`), so a caller can correlate its own logs; anything else is replaced by
a fresh random id.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Iterable
from typing import NamedTuple
from urllib.parse import quote

from gateway.principal import Principal

Header = tuple[bytes, bytes]

# One C-level call: lower-case and map '_' and '.' to '-' (`name.translate(FOLD)`).
FOLD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ_.", b"abcdefghijklmnopqrstuvwxyz--")
_FOLD = FOLD
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
    }
)
IDENTITY = frozenset(
    {
        b"x-auth-subject",
        b"x-auth-client-id",
        b"x-auth-scopes",
        b"x-auth-email",
        b"x-auth-name",
        b"x-auth-groups",
        b"x-request-id",
        b"x-real-ip",
        b"forwarded",
    }
)
CREDENTIALS = frozenset({b"authorization", b"x-api-key"})
# Headers some frameworks read as "the real method / path": the upstream must see the
# request the gateway authorised, nothing else.
OVERRIDES = frozenset(
    {
        b"x-http-method-override",
        b"x-method-override",
        b"x-http-method",
        b"x-original-url",
        b"x-rewrite-url",
    }
)
# Routing and framing the gateway sets itself for the upstream hop.
OWN = frozenset({b"host", b"content-length", b"expect"})
_CONNECTION = frozenset({b"connection", b"proxy-connection"})
REQUEST_DROP = HOP_BY_HOP | IDENTITY | CREDENTIALS | OWN | OVERRIDES
RESPONSE_DROP = HOP_BY_HOP | frozenset({b"server", b"date"})
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")
# Common request header names (as the server hands them over: lower-case) that fold to
# themselves and are forwarded as they are: kept without the general checks below.
PLAIN_FORWARDED = frozenset(
    {
        b"accept",
        b"accept-encoding",
        b"accept-language",
        b"cache-control",
        b"content-type",
        b"last-event-id",
        b"mcp-protocol-version",
        b"mcp-session-id",
        b"user-agent",
    }
)
_PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def fold(name: bytes) -> bytes:
    return name.translate(_FOLD)


def connection_tokens(value: bytes) -> frozenset[bytes]:
    """Header names listed in a `Connection` header value, folded."""
    return frozenset(fold(token.strip()) for token in value.split(b",") if token.strip())


class Forwarding(NamedTuple):
    """What the gateway asserts about the client hop (P6). A NamedTuple: built on every
    request, and a frozen dataclass's __init__ costs several times more."""

    peer: bytes
    proto: bytes
    host: bytes
    trusted: bool


def request_headers(
    headers: Iterable[Header],
    principal: Principal | None,
    forwarding: Forwarding,
    *,
    identity: list[Header] | None = None,
    new_id: Callable[[], bytes] | None = None,
) -> list[Header]:
    """The headers to send upstream, without Host and framing headers.

    `identity` is `identity_headers(principal)` when the caller has it cached; `new_id`
    makes the id of a request that brought no sane one (default: `new_request_id`).
    """
    return upstream_headers(headers, principal, forwarding, identity=identity, new_id=new_id)[0]


def upstream_headers(
    headers: Iterable[Header],
    principal: Principal | None,
    forwarding: Forwarding,
    *,
    identity: list[Header] | None = None,
    new_id: Callable[[], bytes] | None = None,
) -> tuple[list[Header], bytes]:
    """`request_headers`, and the request id they carry."""
    named: frozenset[bytes] = frozenset()
    kept: list[Header] = []
    request_id = b""
    chain: list[bytes] = []
    proto = host = b""
    plain = PLAIN_FORWARDED
    for name, value in headers:
        if name in plain:
            kept.append((name, value))
            continue
        key = name.translate(_FOLD)
        if key.startswith(b"x-forwarded-"):
            if forwarding.trusted:
                if key == b"x-forwarded-for":
                    chain.append(value)
                elif key == b"x-forwarded-proto":
                    proto = proto or value
                elif key == b"x-forwarded-host":
                    host = host or value
            continue
        if key == b"cookie" and b"__Host-mgw-" in value:
            # The gateway's own cookies (gateway.people.session) never go upstream.
            value = strip_own_cookies(value)
            if not value:
                continue
        elif key in REQUEST_DROP:
            if key in _CONNECTION:
                named |= connection_tokens(value)
            elif name == b"x-request-id" and _REQUEST_ID.fullmatch(value):
                request_id = request_id or value
            continue
        kept.append((name, value))
    if named:
        kept = [(name, value) for name, value in kept if name.translate(_FOLD) not in named]
    chain.append(forwarding.peer)
    kept.append((b"x-forwarded-for", b", ".join(chain)))
    kept.append((b"x-forwarded-proto", proto or forwarding.proto))
    if host or forwarding.host:
        kept.append((b"x-forwarded-host", host or forwarding.host))
    request_id = request_id or (new_id or new_request_id)()
    kept.append((b"x-request-id", request_id))
    if identity is not None:
        kept += identity
    elif principal is not None:
        kept += identity_headers(principal)
    return kept, request_id


def response_headers(headers: Iterable[Header]) -> list[Header]:
    """Upstream response headers minus hop-by-hop ones and those named in Connection."""
    headers = list(headers)
    named = _named_in_connection(headers)
    return [
        (name, value)
        for name, value in headers
        if (key := name.translate(_FOLD)) not in RESPONSE_DROP and key not in named
    ]


def identity_headers(principal: Principal) -> list[Header]:
    headers = [
        (b"x-auth-subject", header_value(principal.subject)),
        (b"x-auth-client-id", header_value(principal.client_id)),
        (b"x-auth-scopes", header_value(" ".join(sorted(principal.scopes)))),
    ]
    # A person signed in through an identity provider (gateway.people): who they are.
    if principal.email:
        headers.append((b"x-auth-email", header_value(principal.email)))
    if principal.name:
        headers.append((b"x-auth-name", header_value(principal.name)))
    if principal.groups:
        headers.append((b"x-auth-groups", groups_value(principal.groups)))
    return headers


def header_value(text: str) -> bytes:
    """A claim as a header value: non-printable characters are percent-encoded, so a
    claim holding CR/LF cannot split or add headers."""
    if text.isascii() and text.isprintable() and "%" not in text:
        return text.encode("ascii")
    return quote(text, safe=_PRINTABLE).encode("ascii")


_GROUP_SAFE = _PRINTABLE.replace(",", "")


def groups_value(groups: Iterable[str]) -> bytes:
    """Groups comma-separated; a `,` `%` or non-printable character inside a name is
    percent-encoded, so the list splits back unambiguously."""
    return b",".join(quote(group, safe=_GROUP_SAFE).encode("ascii") for group in groups)


def strip_own_cookies(value: bytes) -> bytes:
    """A Cookie header without the gateway's own `__Host-mgw-*` cookies (the browser
    session of gateway.people is a credential: never forwarded upstream)."""
    kept = [
        part.strip()
        for part in value.split(b";")
        if part.strip() and not part.strip().startswith(b"__Host-mgw-")
    ]
    return b"; ".join(kept)


def new_request_id() -> bytes:
    return os.urandom(12).hex().encode("ascii")


class RequestIds:
    """Unique request ids without a system call each: a random per-process prefix and
    a counter (`new_request_id` costs a getrandom(2) per request)."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._count = itertools.count(1)

    def __call__(self) -> bytes:
        return f"{self._prefix}{next(self._count):08x}".encode("ascii")


class IdentityCache:
    """`identity_headers(principal)` built once per principal (bounded).

    Keyed by the object (the Authenticator hands back the same Principal for a token it
    has seen), not by value: hashing a frozen dataclass runs Python code on every
    request. An entry holds its principal, so its id cannot be reused while cached; an
    equal principal that is another object is built once more, which is harmless."""

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._built: dict[int, tuple[Principal, list[Header]]] = {}

    def __call__(self, principal: Principal) -> list[Header]:
        built = self._built.get(id(principal))
        if built is not None and built[0] is principal:
            return built[1]
        if len(self._built) >= self._limit:
            self._built.clear()
        headers = identity_headers(principal)
        self._built[id(principal)] = (principal, headers)
        return headers


def _named_in_connection(headers: list[Header]) -> frozenset[bytes]:
    named: frozenset[bytes] = frozenset()
    for name, value in headers:
        if name.translate(_FOLD) in (b"connection", b"proxy-connection"):
            named |= connection_tokens(value)
    return named
