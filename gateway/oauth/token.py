"""The token endpoint (RFC 6749 §3.2, PROTOCOL T1-T6): one function per grant."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

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
from gateway.oauth.context import Context
from gateway.oauth.pkce import verifier_matches
from gateway.oauth.resource import resolve_resource
from gateway.oauth.scopes import format_scope, grant_scopes, narrow_scopes, parse_scope
from gateway.oauth.tokens import Person
from gateway.store.base import AuthorizationCode, hash_secret

Body = dict[str, object]
Grant = Callable[[Context, Client, Mapping[str, str]], Awaitable[Body]]


def required(form: Mapping[str, str], name: str) -> str:
    value = form.get(name)
    if value is None:
        raise InvalidRequest(f"the {name} parameter is required")
    return value


def requested_resource(ctx: Context, form: Mapping[str, str]) -> str:
    """The audience named by `resource` (A4); the form parser has already refused two
    different values (RFC 8707 §2: one resource per token request here)."""
    requested = [form["resource"]] if "resource" in form else []
    return resolve_resource(requested, ctx.settings.resource, issuer=ctx.settings.issuer)


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


async def authorization_code(ctx: Context, client: Client, form: Mapping[str, str]) -> Body:
    redemption = await ctx.store.redeem_code(hash_secret(required(form, "code")))
    if redemption is None:
        raise InvalidGrant("unknown or expired authorization code")
    code = redemption.code
    if not redemption.first_use:
        audit.warning(
            "oauth authorization code replayed by client=%s: its tokens are revoked",
            client.client_id,
        )
        await ctx.revoker.revoke_family(code.family)
        raise InvalidGrant("authorization code already used; tokens issued from it are revoked")
    now = ctx.clock()
    check_code(code, client, form, now, requested_resource(ctx, form))
    scopes = parse_scope(code.scope)
    refresh_token = None
    if "offline_access" in scopes and "refresh_token" in client.grant_types:
        refresh_token = refresh.new_refresh_token()
        saved = await ctx.store.save_refresh(
            refresh.refresh_record(
                refresh_token,
                family=code.family,
                client_id=client.client_id,
                subject=code.subject,
                scope=code.scope,
                resource=code.resource,
                now=now,
                ttl=ctx.settings.refresh_token_ttl,
            )
        )
        if not saved:
            # A replay of this code revoked the family while we were exchanging it (T4).
            raise InvalidGrant("authorization code already used; its grant has been revoked")
    person, scopes = await _person(ctx, code.subject, client, code.family, scopes)
    return token_body(
        ctx, client, code.subject, scopes, code.resource, code.family, refresh_token, person
    )


async def refresh_token(ctx: Context, client: Client, form: Mapping[str, str]) -> Body:
    presented = required(form, "refresh_token")
    now = ctx.clock()
    current = await refresh.find_current(ctx.store, presented, client, now)
    if ctx.revocations.is_family_revoked(current.family):
        raise InvalidGrant("this grant has been revoked")
    scopes = narrow_scopes(form.get("scope"), parse_scope(current.scope))
    if requested_resource(ctx, form) != current.resource:
        raise InvalidTarget("resource differs from the original grant")
    person, scopes = await _person(ctx, current.subject, client, current.family, scopes)
    successor = await refresh.rotate(
        ctx.store,
        ctx.revoker,
        presented,
        current,
        now=now,
        ttl=ctx.settings.refresh_token_ttl,
        grace=ctx.settings.refresh_grace_seconds,
    )
    return token_body(
        ctx, client, current.subject, scopes, current.resource, current.family, successor, person
    )


async def client_credentials(ctx: Context, client: Client, form: Mapping[str, str]) -> Body:
    """T6, for clients an operator registered only: nobody consents to this grant, so a
    self-registered client (or one stored before the `trusted` flag existed) is refused."""
    if client.is_public:
        raise UnauthorizedClient("client_credentials needs a confidential client")
    if not client.trusted:
        raise UnauthorizedClient(
            "client_credentials is only for clients registered with an operator credential"
        )
    scopes = grant_scopes(form.get("scope"), client.scopes - {"offline_access"})
    resource = requested_resource(ctx, form)
    return token_body(ctx, client, client.client_id, scopes, resource, None, None)


GRANTS: dict[str, Grant] = {
    "authorization_code": authorization_code,
    "refresh_token": refresh_token,
    "client_credentials": client_credentials,
}


async def _person(
    ctx: Context, subject: str, client: Client, family: str, scopes: frozenset[str]
) -> tuple[Person | None, frozenset[str]]:
    """The signed-in person a grant acts for, and its scopes within what they may hold
    now (gateway.people); (None, scopes) for the operator's grants."""
    if ctx.people is None:
        return None, scopes
    return await ctx.people.token_person(subject, client.client_id, family, scopes)


def token_body(
    ctx: Context,
    client: Client,
    subject: str,
    scopes: frozenset[str],
    resource: str,
    family: str | None,
    refresh_value: str | None,
    person: Person | None = None,
) -> Body:
    issued = ctx.tokens.issue(
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


@dataclass
class TokenHandler:
    ctx: Context

    async def __call__(self, request: Request) -> Response:
        await self.ctx.limit("token", request)
        form = await self.ctx.form(request)
        client = await self.ctx.authenticate(request, form)
        grant_type = required(form, "grant_type")
        grant = GRANTS.get(grant_type)
        if grant is None:
            raise UnsupportedGrantType(f"unsupported grant_type {grant_type!r}")
        if grant_type not in client.grant_types:
            raise UnauthorizedClient(f"this client may not use the {grant_type} grant")
        if self.ctx.revocations.is_client_revoked(client.client_id):
            # `memory-gateway clients revoke`: its tokens would be refused anyway.
            raise UnauthorizedClient("this client's tokens were revoked by the operator")
        body = await grant(self.ctx, client, form)
        await self.ctx.store.mark_client_used(client.client_id, self.ctx.clock())
        self.ctx.token_event("refreshed" if grant_type == "refresh_token" else "issued", grant_type)
        audit.info(
            "oauth token issued: grant=%s client=%s scope=%r refresh=%s",
            grant_type,
            client.client_id,
            body["scope"],
            "refresh_token" in body,
        )
        return JSONResponse(body, headers=NO_STORE)
