"""The token endpoint (RFC 6749 §3.2, PROTOCOL T1-T6): one object per grant type."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import (
    NO_STORE,
    InvalidGrant,
    InvalidRequest,
    InvalidTarget,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from gateway.models import Client
from gateway.oauth import refresh
from gateway.oauth.audit import audit
from gateway.oauth.client_auth import ClientAuthenticator
from gateway.oauth.events import TokenEvents, no_events
from gateway.oauth.forms import read_form
from gateway.oauth.pkce import verifier_matches
from gateway.oauth.resource import resolve_resource
from gateway.oauth.revocation import RevocationCache, Revoker
from gateway.oauth.scopes import format_scope, grant_scopes, narrow_scopes, parse_scope
from gateway.oauth.throttle import PeerLimit
from gateway.oauth.tokens import Person, TokenService
from gateway.store.base import (
    AuthorizationCode,
    ClientStore,
    CodeStore,
    RefreshStore,
    hash_secret,
)

Body = dict[str, object]
# A grant type: the token response for an authenticated client allowed to use it.
Grant = Callable[[Client, Mapping[str, str]], Awaitable[Body]]


class Persons(Protocol):
    """Who a grant acts for when people sign in (gateway.people.flow.People)."""

    async def token_person(
        self, subject: str, client_id: str, family: str, scopes: frozenset[str]
    ) -> tuple[Person | None, frozenset[str]]:
        """The person and the scopes they may still hold; InvalidGrant otherwise."""


def required(form: Mapping[str, str], name: str) -> str:
    value = form.get(name)
    if value is None:
        raise InvalidRequest(f"the {name} parameter is required")
    return value


def requested_resource(form: Mapping[str, str], resource: str, issuer: str) -> str:
    """The audience named by `resource` (A4); the form parser has already refused two
    different values (RFC 8707 §2: one resource per token request here)."""
    requested = [form["resource"]] if "resource" in form else []
    return resolve_resource(requested, resource, issuer=issuer)


def check_code(
    code: AuthorizationCode, client: Client, form: Mapping[str, str], now: float, audience: str
) -> None:
    """Everything a first-use code is bound to (A3, A4, A7; RFC 6749 §4.1.3)."""
    if code.expires_at <= now:
        raise InvalidGrant("authorization code expired")
    if code.client_id != client.client_id:
        raise InvalidGrant("authorization code was issued to another client")
    redirect_uri = form.get("redirect_uri")
    if (code.redirect_uri_given or redirect_uri is not None) and redirect_uri != code.redirect_uri:
        raise InvalidGrant("redirect_uri does not match the authorization request")
    verifier = form.get("code_verifier")
    if code.code_challenge is None and verifier is not None:
        raise InvalidGrant("code_verifier sent but no code_challenge was given")
    if code.code_challenge is not None:
        if verifier is None:
            raise InvalidRequest("code_verifier is required")
        if not verifier_matches(verifier, code.code_challenge):
            raise InvalidGrant("PKCE verification failed")
    if audience != code.resource:
        raise InvalidTarget("resource differs from the authorization request")


class _CodeGrantStore(CodeStore, RefreshStore, Protocol):
    pass


@dataclass(frozen=True)
class AuthorizationCodeGrant:
    store: _CodeGrantStore
    revoker: Revoker
    tokens: TokenService
    resource: str
    issuer: str
    refresh_ttl: int
    people: Persons | None = None
    clock: Callable[[], float] = time.time

    async def __call__(self, client: Client, form: Mapping[str, str]) -> Body:
        redemption = await self.store.redeem_code(hash_secret(required(form, "code")))
        if redemption is None:
            raise InvalidGrant("unknown or expired authorization code")
        code = redemption.code
        if not redemption.first_use:
            audit.warning(
                "oauth authorization code replayed by client=%s: its tokens are revoked",
                client.client_id,
            )
            await self.revoker.revoke_family(code.family)
            raise InvalidGrant("authorization code already used; tokens issued from it are revoked")
        now = self.clock()
        check_code(code, client, form, now, requested_resource(form, self.resource, self.issuer))
        scopes = parse_scope(code.scope)
        refresh_token = None
        if "offline_access" in scopes and "refresh_token" in client.grant_types:
            refresh_token = refresh.new_refresh_token()
            saved = await self.store.save_refresh(
                refresh.refresh_record(
                    refresh_token,
                    family=code.family,
                    client_id=client.client_id,
                    subject=code.subject,
                    scope=code.scope,
                    resource=code.resource,
                    now=now,
                    ttl=self.refresh_ttl,
                )
            )
            if not saved:
                # A replay of this code revoked the family while we were exchanging it (T4).
                raise InvalidGrant("authorization code already used; its grant has been revoked")
        person, scopes = await _person(self.people, code.subject, client, code.family, scopes)
        return token_body(
            self.tokens,
            client,
            code.subject,
            scopes,
            code.resource,
            code.family,
            refresh_token,
            person,
        )


@dataclass(frozen=True)
class RefreshTokenGrant:
    store: RefreshStore
    revoker: Revoker
    revocations: RevocationCache
    tokens: TokenService
    resource: str
    issuer: str
    refresh_ttl: int
    grace: int
    people: Persons | None = None
    clock: Callable[[], float] = time.time

    async def __call__(self, client: Client, form: Mapping[str, str]) -> Body:
        presented = required(form, "refresh_token")
        now = self.clock()
        current = await refresh.find_current(self.store, presented, client, now)
        if self.revocations.is_family_revoked(current.family):
            raise InvalidGrant("this grant has been revoked")
        scopes = narrow_scopes(form.get("scope"), parse_scope(current.scope))
        if requested_resource(form, self.resource, self.issuer) != current.resource:
            raise InvalidTarget("resource differs from the original grant")
        person, scopes = await _person(self.people, current.subject, client, current.family, scopes)
        successor = await refresh.rotate(
            self.store,
            self.revoker,
            presented,
            current,
            now=now,
            ttl=self.refresh_ttl,
            grace=self.grace,
        )
        return token_body(
            self.tokens,
            client,
            current.subject,
            scopes,
            current.resource,
            current.family,
            successor,
            person,
        )


@dataclass(frozen=True)
class ClientCredentialsGrant:
    """T6, for clients an operator registered only: nobody consents to this grant, so a
    self-registered client (or one stored before the `trusted` flag existed) is refused."""

    tokens: TokenService
    resource: str
    issuer: str

    async def __call__(self, client: Client, form: Mapping[str, str]) -> Body:
        if client.is_public:
            raise UnauthorizedClient("client_credentials needs a confidential client")
        if not client.trusted:
            raise UnauthorizedClient(
                "client_credentials is only for clients registered with an operator credential"
            )
        scopes = grant_scopes(form.get("scope"), client.scopes - {"offline_access"})
        resource = requested_resource(form, self.resource, self.issuer)
        return token_body(self.tokens, client, client.client_id, scopes, resource, None, None)


async def _person(
    people: Persons | None, subject: str, client: Client, family: str, scopes: frozenset[str]
) -> tuple[Person | None, frozenset[str]]:
    """The signed-in person a grant acts for, and its scopes within what they may hold
    now (gateway.people); (None, scopes) for the operator's grants."""
    if people is None:
        return None, scopes
    return await people.token_person(subject, client.client_id, family, scopes)


def token_body(
    tokens: TokenService,
    client: Client,
    subject: str,
    scopes: frozenset[str],
    resource: str,
    family: str | None,
    refresh_value: str | None,
    person: Person | None = None,
) -> Body:
    issued = tokens.issue(
        subject=subject,
        client_id=client.client_id,
        scopes=scopes,
        audience=resource,
        family=family,
        person=person,
    )
    body: Body = {
        "access_token": issued.token,
        "token_type": "Bearer",
        "expires_in": issued.claims.expires_at - issued.claims.issued_at,
        "scope": format_scope(scopes),
    }
    if refresh_value is not None:
        body["refresh_token"] = refresh_value
    return body


@dataclass(frozen=True)
class TokenHandler:
    """`POST /oauth/token`: authenticate the client, then the grant its `grant_type`
    names in `grants` (built by gateway.authserver)."""

    limit: PeerLimit
    max_body: int
    authenticate: ClientAuthenticator
    grants: Mapping[str, Grant]
    revocations: RevocationCache
    clients: ClientStore
    on_token: TokenEvents = no_events
    clock: Callable[[], float] = time.time

    async def __call__(self, request: Request) -> Response:
        await self.limit("token", request)
        form = await read_form(request, self.max_body)
        client = await self.authenticate(request, form)
        grant_type = required(form, "grant_type")
        grant = self.grants.get(grant_type)
        if grant is None:
            raise UnsupportedGrantType(f"unsupported grant_type {grant_type!r}")
        if grant_type not in client.grant_types:
            raise UnauthorizedClient(f"this client may not use the {grant_type} grant")
        if self.revocations.is_client_revoked(client.client_id):
            # `memory-gateway clients revoke`: its tokens would be refused anyway.
            raise UnauthorizedClient("this client's tokens were revoked by the operator")
        body = await grant(client, form)
        await self.clients.mark_client_used(client.client_id, self.clock())
        self.on_token("refreshed" if grant_type == "refresh_token" else "issued", grant_type)
        audit.info(
            "oauth token issued: grant=%s client=%s scope=%r refresh=%s",
            grant_type,
            client.client_id,
            body["scope"],
            "refresh_token" in body,
        )
        return JSONResponse(body, headers=NO_STORE)
