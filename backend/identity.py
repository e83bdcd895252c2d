"""Identity the gateway asserts in request headers; used for attribution only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

SUBJECT_HEADER = "x-auth-subject"
CLIENT_ID_HEADER = "x-auth-client-id"
SCOPES_HEADER = "x-auth-scopes"
REQUEST_ID_HEADER = "x-request-id"


@dataclass(frozen=True, slots=True)
class Identity:
    client_id: str | None = None
    subject: str | None = None
    scopes: tuple[str, ...] = ()
    request_id: str | None = None


ANONYMOUS = Identity()


def identity_from_headers(headers: Mapping[str, str] | None) -> Identity:
    if headers is None:
        return ANONYMOUS
    lowered = {key.lower(): value for key, value in headers.items()}
    return Identity(
        client_id=lowered.get(CLIENT_ID_HEADER) or None,
        subject=lowered.get(SUBJECT_HEADER) or None,
        scopes=tuple(lowered.get(SCOPES_HEADER, "").split()),
        request_id=lowered.get(REQUEST_ID_HEADER) or None,
    )
