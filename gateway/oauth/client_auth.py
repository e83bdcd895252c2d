"""Client authentication at the token, revocation and introspection endpoints (T1, T2).

`client_secret_basic` carries `application/x-www-form-urlencoded` id and secret inside
base64 (RFC 6749 §2.3.1), so both are percent-decoded after base64 decoding.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import unquote_plus

from starlette.requests import Request

from gateway.errors import InvalidClient, InvalidRequest
from gateway.models import Client
from gateway.store.base import hash_secret

Method = Literal["client_secret_basic", "client_secret_post", "none"]
BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="oauth", charset="UTF-8"'}


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    secret: str | None
    method: Method


class ClientLookup(Protocol):
    async def __call__(self, client_id: str) -> Client | None: ...


def parse_credentials(authorization: str | None, form: Mapping[str, str]) -> ClientCredentials:
    """Which client the request claims to be, and how; InvalidRequest when ambiguous."""
    basic = _basic(authorization)
    form_id = form.get("client_id")
    form_secret = form.get("client_secret")
    if basic is not None:
        if form_secret is not None:
            raise InvalidRequest("use one client authentication method, not two")
        if form_id is not None and form_id != basic[0]:
            raise InvalidRequest("client_id does not match the Basic credentials")
        return ClientCredentials(basic[0], basic[1], "client_secret_basic")
    if form_id is None:
        raise InvalidClient("client authentication is required")
    if form_secret is not None:
        return ClientCredentials(form_id, form_secret, "client_secret_post")
    return ClientCredentials(form_id, None, "none")


def _basic(authorization: str | None) -> tuple[str, str] | None:
    if authorization is None:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClient("malformed Basic credentials", headers=BASIC_CHALLENGE) from None
    raw_id, sep, raw_secret = decoded.partition(":")
    if not sep or not raw_id:
        raise InvalidClient("malformed Basic credentials", headers=BASIC_CHALLENGE)
    return unquote_plus(raw_id), unquote_plus(raw_secret)


def check_secret(client: Client, credentials: ClientCredentials, now: float) -> None:
    """InvalidClient unless the credentials fit the client's registered method."""
    challenge = BASIC_CHALLENGE if credentials.method == "client_secret_basic" else {}
    if client.is_public:
        if credentials.secret is not None:
            raise InvalidClient("public clients do not use a secret", headers=challenge)
        return
    if credentials.secret is None or client.client_secret_hash is None:
        raise InvalidClient("client authentication failed", headers=challenge)
    if not hmac.compare_digest(hash_secret(credentials.secret), client.client_secret_hash):
        raise InvalidClient("client authentication failed", headers=challenge)
    if client.client_secret_expires_at and client.client_secret_expires_at < now:
        raise InvalidClient("client secret expired", headers=challenge)


async def authenticate_client(
    lookup: ClientLookup, authorization: str | None, form: Mapping[str, str], now: float
) -> Client:
    credentials = parse_credentials(authorization, form)
    client = await lookup(credentials.client_id)
    if client is None:
        challenge = BASIC_CHALLENGE if credentials.method == "client_secret_basic" else {}
        raise InvalidClient("unknown client", headers=challenge)
    check_secret(client, credentials, now)
    return client


@dataclass(frozen=True)
class ClientAuthenticator:
    """`await authenticate(request, form)`: the client the request's credentials prove,
    or InvalidClient / InvalidRequest."""

    find: ClientLookup
    clock: Callable[[], float] = time.time

    async def __call__(self, request: Request, form: Mapping[str, str]) -> Client:
        authorization = request.headers.get("authorization")
        return await authenticate_client(self.find, authorization, form, self.clock())
