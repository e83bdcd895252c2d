"""The gateway's errors: one root, one class per error code, one renderer.

GatewayError                     500 server_error; the root of every error raised on purpose
├── OAuthError                   400 invalid_request unless stated (RFC 6749 §5.2 shape)
│   ├── InvalidRequest           RFC 6749 §5.2
│   ├── InvalidClient            401 (RFC 6749 §5.2)
│   ├── InvalidGrant
│   ├── UnauthorizedClient
│   ├── UnsupportedGrantType
│   ├── UnsupportedResponseType  RFC 6749 §4.1.2.1
│   ├── InvalidScope
│   ├── InvalidTarget            RFC 8707 §2
│   ├── AccessDenied             403 on direct responses
│   ├── InvalidRedirectUri       RFC 7591 §3.2.2
│   ├── InvalidClientMetadata    RFC 7591 §3.2.2
│   ├── InvalidToken             401 (RFC 6750 §3.1)
│   ├── InsufficientScope        403 (RFC 6750 §3.1)
│   ├── PayloadTooLarge          413 invalid_request
│   ├── TooManyRequests          429 slow_down, with Retry-After
│   ├── ServerError              500
│   └── TemporarilyUnavailable   503
├── HttpError                    plain HTTP refusals, not OAuth codes
│   ├── NotFound                 404 not_found
│   └── MethodNotAllowed         405 method_not_allowed
├── ProxyError                   upstream failures (PROTOCOL P4): gateway.proxy.errors
├── StoreUnavailable             503: gateway.store.base
└── … start-up and internal errors (settings, policy, tool list, identity provider,
      outbound address guard, a client gone), which are never rendered to a client
      except as a 500.

`render` turns any of them into the (status, headers, body) the client gets, with an
RFC 6749-shaped JSON body; `response` wraps that for Starlette handlers. Nothing else
builds an error body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import ClassVar, NamedTuple

from starlette.requests import Request
from starlette.responses import Response

Header = tuple[bytes, bytes]
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# RFC 6749 §5.2: error_description is %x20-21 / %x23-5B / %x5D-7E (no '"' or '\\').
_OUTSIDE_DESCRIPTION = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")


def description_text(text: str) -> str:
    """`text` within RFC 6749's error_description charset, anything else as '?'."""
    return _OUTSIDE_DESCRIPTION.sub("?", text)


class GatewayError(Exception):
    error: ClassVar[str] = "server_error"
    status_code: ClassVar[int] = 500

    def __init__(self, description: str = "", *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(description or self.error)
        self.description = description
        self.headers = dict(headers or {})

    def body(self) -> dict[str, str]:
        body = {"error": self.error}
        if self.description:
            body["error_description"] = description_text(self.description)
        return body


class OAuthError(GatewayError):
    error = "invalid_request"
    status_code = 400


class HttpError(GatewayError):
    """An HTTP refusal that has no OAuth error code."""

    error = "invalid_request"
    status_code = 400


class InternalError(GatewayError):
    """An error the client never sees the details of: a 500 `server_error` if it ever
    reaches a response (start-up, configuration and internal signals)."""

    def body(self) -> dict[str, str]:
        return {"error": self.error}


class InvalidRequest(OAuthError):
    error = "invalid_request"


class InvalidClient(OAuthError):
    error = "invalid_client"
    status_code = 401


class InvalidGrant(OAuthError):
    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class UnsupportedResponseType(OAuthError):
    error = "unsupported_response_type"


class InvalidScope(OAuthError):
    error = "invalid_scope"


class InvalidTarget(OAuthError):
    error = "invalid_target"


class AccessDenied(OAuthError):
    error = "access_denied"
    status_code = 403


class InvalidRedirectUri(OAuthError):
    error = "invalid_redirect_uri"


class InvalidClientMetadata(OAuthError):
    error = "invalid_client_metadata"


class InvalidToken(OAuthError):
    error = "invalid_token"
    status_code = 401


class InsufficientScope(OAuthError):
    error = "insufficient_scope"
    status_code = 403


class NotFound(HttpError):
    error = "not_found"
    status_code = 404


class MethodNotAllowed(HttpError):
    error = "method_not_allowed"
    status_code = 405


class PayloadTooLarge(OAuthError):
    error = "invalid_request"
    status_code = 413


class TooManyRequests(OAuthError):
    error = "slow_down"
    status_code = 429

    def __init__(self, retry_after: int, description: str = "too many requests") -> None:
        super().__init__(description, headers={"Retry-After": str(max(1, retry_after))})
        self.retry_after = retry_after


class ServerError(OAuthError):
    error = "server_error"
    status_code = 500


class TemporarilyUnavailable(OAuthError):
    error = "temporarily_unavailable"
    status_code = 503


class RawResponse(NamedTuple):
    """A whole response as raw ASGI pieces (also a `(status, headers, body)` triple)."""

    status: int
    headers: list[Header]
    body: bytes


_JSON_NO_STORE: list[Header] = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
    (b"pragma", b"no-cache"),
    (b"x-content-type-options", b"nosniff"),
]


def render(
    error: GatewayError,
    *,
    challenge: str | None = None,
    status: int | None = None,
    extra: Iterable[Header] = (),
) -> RawResponse:
    """The one rendering of an error: RFC 6749 JSON (`error`, `error_description`),
    `Cache-Control: no-store`, the error's own headers (e.g. Retry-After), then a
    `WWW-Authenticate` challenge and `extra` (e.g. CORS) when given. `status` overrides
    the class's status where a rule fixes it (PROTOCOL A1: 400 whatever the error)."""
    payload = json.dumps(error.body(), separators=(",", ":")).encode()
    headers = [*_JSON_NO_STORE, (b"content-length", str(len(payload)).encode())]
    if challenge is not None:
        headers.append((b"www-authenticate", challenge.encode("ascii")))
    headers.extend(
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in error.headers.items()
    )
    headers.extend(extra)
    return RawResponse(error.status_code if status is None else status, headers, payload)


def response(error: GatewayError, *, status: int | None = None) -> Response:
    """`render` as a Starlette response, for the authorization server's handlers."""
    raw = render(error, status=status)
    reply = Response(raw.body, status_code=raw.status)
    reply.raw_headers = raw.headers
    return reply


async def render_error(request: Request, exc: Exception) -> Response:
    """The Starlette exception handler for every GatewayError raised by a handler."""
    assert isinstance(exc, GatewayError)
    return response(exc)
