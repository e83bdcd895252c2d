"""OAuth errors: one class per RFC error code, rendered in one place.

OAuthError                       400 unless stated
├── InvalidRequest               RFC 6749 §5.2
├── InvalidClient                401 (RFC 6749 §5.2)
├── InvalidGrant
├── UnauthorizedClient
├── UnsupportedGrantType
├── UnsupportedResponseType      RFC 6749 §4.1.2.1
├── InvalidScope
├── InvalidTarget                RFC 8707 §2
├── AccessDenied                 403 on direct responses
├── InvalidRedirectUri           RFC 7591 §3.2.2
├── InvalidClientMetadata        RFC 7591 §3.2.2
├── InvalidToken                 401 (RFC 6750 §3.1)
├── NotFound                     404
├── MethodNotAllowed             405
├── PayloadTooLarge              413
├── TooManyRequests              429 with Retry-After
├── ServerError                  500
└── TemporarilyUnavailable       503
"""

from __future__ import annotations

import re
from typing import ClassVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# RFC 6749 §5.2: error_description is %x20-21 / %x23-5B / %x5D-7E (no '"' or '\\').
_OUTSIDE_DESCRIPTION = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")


def description_text(text: str) -> str:
    """`text` within RFC 6749's error_description charset, anything else as '?'."""
    return _OUTSIDE_DESCRIPTION.sub("?", text)


class OAuthError(Exception):
    error: ClassVar[str] = "invalid_request"
    status_code: ClassVar[int] = 400

    def __init__(self, description: str = "", *, headers: dict[str, str] | None = None) -> None:
        super().__init__(description or self.error)
        self.description = description
        self.headers = dict(headers or {})

    def body(self) -> dict[str, str]:
        body = {"error": self.error}
        if self.description:
            body["error_description"] = description_text(self.description)
        return body

    def response(self) -> Response:
        return JSONResponse(
            self.body(), status_code=self.status_code, headers={**NO_STORE, **self.headers}
        )


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


class NotFound(OAuthError):
    error = "not_found"
    status_code = 404


class MethodNotAllowed(OAuthError):
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


async def render_oauth_error(request: Request, exc: Exception) -> Response:
    """The one exception handler for every OAuthError raised by a handler."""
    assert isinstance(exc, OAuthError)
    return exc.response()
