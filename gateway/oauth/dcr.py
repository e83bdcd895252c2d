"""Registration endpoints: RFC 7591 `POST /oauth/register`, RFC 7592 client configuration
at `/oauth/register/{client_id}`, and the seed's `GET /oauth/clients/{client_id}`.

Secrets and registration access tokens are returned once, at registration, and stored
hashed. The debugging endpoint accepts the client's registration access token or
`MCP_API_KEY`; without either it answers 401, so it never leaks client metadata.

A registration presenting an operator credential as Bearer (the initial access token
`MCP_DCR_REGISTRATION_KEY` or `MCP_API_KEY`) makes a trusted client (see
`registration`). When the registry is full, never-used clients make room first, then
the least recently used client not registered by an operator (R5).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import (
    NO_STORE,
    InvalidClientMetadata,
    InvalidToken,
    NotFound,
    TemporarilyUnavailable,
)
from gateway.models import Client
from gateway.oauth.audit import audit, peer
from gateway.oauth.forms import read_json_object
from gateway.oauth.registration import client_document, client_from_metadata
from gateway.oauth.revocation import Revoker
from gateway.oauth.throttle import PeerLimit
from gateway.store.base import ClientStore, hash_secret

BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
# When the registry is full, never-used clients older than this make room.
UNUSED_CLIENT_GRACE = 3600


def bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def same_secret(presented: str | None, expected: str | None) -> bool:
    """Constant time, including the length: digests are compared, not the strings."""
    if presented is None or not expected:
        return False
    return hmac.compare_digest(_digest(presented), _digest(expected))


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def operator_credential(
    request: Request, registration_key: str | None, api_key: str | None
) -> bool:
    """The request carries the initial access token or the API key as Bearer."""
    token = bearer(request)
    return same_secret(token, registration_key) or same_secret(token, api_key)


@dataclass(frozen=True)
class RegisterHandler:
    """`POST /oauth/register`; `registration_key` (MCP_DCR_REGISTRATION_KEY) closes it to
    anyone without an operator credential."""

    limit: PeerLimit
    clients: ClientStore
    revoker: Revoker
    issuer: str
    api_key: str | None
    registration_key: str | None
    allowed_schemes: tuple[str, ...]
    max_body: int
    max_clients: int
    clock: Callable[[], float] = time.time

    async def __call__(self, request: Request) -> Response:
        await self.limit("register", request)
        trusted = operator_credential(request, self.registration_key, self.api_key)
        if self.registration_key is not None and not trusted:
            raise InvalidToken(
                "registration needs the initial access token", headers=BEARER_CHALLENGE
            )
        data = await read_json_object(request, self.max_body)
        now = int(self.clock())
        client = client_from_metadata(
            data,
            client_id=f"mcp_client_{secrets.token_urlsafe(16)}",
            issued_at=now,
            allowed_schemes=self.allowed_schemes,
            trusted=trusted,
        )
        secret = None if client.is_public else secrets.token_urlsafe(32)
        registration_token = secrets.token_urlsafe(32)
        client = dataclasses.replace(
            client,
            client_secret_hash=hash_secret(secret) if secret else None,
            registration_token_hash=hash_secret(registration_token),
        )
        await self._store(client, now)
        audit.info(
            "oauth client registered: %s %r auth=%s operator=%s from %s",
            client.client_id,
            client.client_name,
            client.token_endpoint_auth_method,
            trusted,
            peer(request),
        )
        body = configuration_document(self.issuer, client)
        body["registration_access_token"] = registration_token
        if secret is not None:
            body["client_secret"] = secret
            body["client_secret_expires_at"] = 0
        return JSONResponse(body, status_code=201, headers=NO_STORE)

    async def _store(self, client: Client, now: int) -> None:
        limit = self.max_clients
        if await self.clients.add_client(client, limit=limit):
            return
        await self.clients.prune_unused_clients(now - UNUSED_CLIENT_GRACE)
        if await self.clients.add_client(client, limit=limit):
            return
        # An anonymous registration may push out only a never-used registration (the
        # earliest): a flood of them must never evict a client that holds tokens or was
        # used; with none left to push out it is refused. Operator ones may take the
        # least recently used open client's place.
        evicted = await self.clients.evict_client(unused_only=not client.trusted)
        if evicted is None and not client.trusted:
            audit.warning("oauth client registry full: anonymous registration refused")
            raise TemporarilyUnavailable(
                "the client registry is full of clients in use (MCP_OAUTH_MAX_CLIENTS); "
                "anonymous registrations are refused until some are deleted",
                headers={"Retry-After": "3600"},
            )
        if evicted is not None:
            audit.warning("oauth client registry full: evicted %s (least recently used)", evicted)
            await self.revoker.revoke_client(evicted)
            if await self.clients.add_client(client, limit=limit):
                return
        raise TemporarilyUnavailable("the client registry is full; try again later")


def configuration_document(issuer: str, client: Client) -> dict[str, object]:
    uri = f"{issuer}/oauth/register/{client.client_id}"
    return {**client_document(client), "registration_client_uri": uri}


async def client_for_token(clients: ClientStore, request: Request) -> Client:
    """RFC 7592 §3: the client named in the path, if the registration token is its own."""
    client = await clients.get_client(request.path_params["client_id"])
    token = bearer(request)
    if client is None or client.registration_token_hash is None or token is None:
        raise InvalidToken(
            "a valid registration access token is required", headers=BEARER_CHALLENGE
        )
    if not hmac.compare_digest(hash_secret(token), client.registration_token_hash):
        raise InvalidToken(
            "a valid registration access token is required", headers=BEARER_CHALLENGE
        )
    return client


@dataclass(frozen=True)
class ClientConfigurationHandler:
    """RFC 7592 read, update and delete at `/oauth/register/{client_id}`."""

    limit: PeerLimit
    clients: ClientStore
    revoker: Revoker
    issuer: str
    allowed_schemes: tuple[str, ...]
    max_body: int

    async def __call__(self, request: Request) -> Response:
        await self.limit("client-config", request)
        client = await client_for_token(self.clients, request)
        if request.method == "DELETE":
            # RFC 7592 §2.3: the client's grants and tokens go with it.
            await self.clients.delete_client(client.client_id)
            await self.revoker.revoke_client(client.client_id)
            audit.info("oauth client deleted: %s from %s", client.client_id, peer(request))
            return Response(status_code=204, headers=NO_STORE)
        if request.method == "PUT":
            client = await self._update(request, client)
        return JSONResponse(configuration_document(self.issuer, client), headers=NO_STORE)

    async def _update(self, request: Request, client: Client) -> Client:
        data = await read_json_object(request, self.max_body)
        if data.get("client_id") != client.client_id:
            raise InvalidClientMetadata("client_id must match the client being updated")
        updated = client_from_metadata(
            data,
            client_id=client.client_id,
            issued_at=client.client_id_issued_at,
            allowed_schemes=self.allowed_schemes,
            trusted=client.trusted,
        )
        if updated.is_public != client.is_public:
            raise InvalidClientMetadata(
                "token_endpoint_auth_method cannot switch public/confidential"
            )
        updated = dataclasses.replace(
            updated,
            client_secret_hash=client.client_secret_hash,
            client_secret_expires_at=client.client_secret_expires_at,
            registration_token_hash=client.registration_token_hash,
        )
        await self.clients.replace_client(updated)
        return updated


@dataclass(frozen=True)
class ClientInfoHandler:
    """The seed's debugging endpoint; secrets are never shown."""

    limit: PeerLimit
    clients: ClientStore
    api_key: str | None

    async def __call__(self, request: Request) -> Response:
        await self.limit("client-config", request)
        token = bearer(request)
        if same_secret(token, self.api_key):
            client = await self.clients.get_client(request.path_params["client_id"])
            if client is None:
                raise NotFound("no such client")
        else:
            client = await client_for_token(self.clients, request)
        body = client_document(client)
        body["has_client_secret"] = client.client_secret_hash is not None
        body["operator_registered"] = client.trusted
        return JSONResponse(body, headers=NO_STORE)
