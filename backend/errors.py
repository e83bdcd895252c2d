"""Errors the backend renders as JSON.

BackendError            500-free base: every subclass carries its status and code
├── BadRequest          400 malformed body (not JSON, not an object)
├── InvalidField        422 a named field is missing, of the wrong type or out of range
├── NotFound            404 unknown route or memory
├── MethodNotAllowed    405
└── PayloadTooLarge     413 content or body over the configured limit
"""

from __future__ import annotations

from typing import Any, ClassVar


class BackendError(Exception):
    status_code: ClassVar[int] = 400
    error: ClassVar[str] = "bad_request"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error, "detail": self.detail}
        if self.field is not None:
            body["field"] = self.field
        return body


class BadRequest(BackendError):
    status_code = 400
    error = "bad_request"


class InvalidField(BackendError):
    status_code = 422
    error = "invalid_field"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}", field=field)


class NotFound(BackendError):
    status_code = 404
    error = "not_found"


class MethodNotAllowed(BackendError):
    status_code = 405
    error = "method_not_allowed"


class PayloadTooLarge(BackendError):
    status_code = 413
    error = "payload_too_large"
