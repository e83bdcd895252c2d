"""HTTP handlers of the authorization endpoint and the consent form (PROTOCOL A1-A7)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.errors import NO_STORE, AccessDenied, InvalidRequest, OAuthError, response
from gateway.models import Client
from gateway.oauth.audit import audit, log_refusal, peer
from gateway.oauth.authorize import choose_redirect, new_code, redirect_url, validate_authorization
from gateway.oauth.consent import consent_page, error_page
from gateway.oauth.context import Context
from gateway.oauth.dcr import same_secret
from gateway.oauth.forms import single_params
from gateway.oauth.redirects import is_loopback, redirect_host
from gateway.store.base import PendingConsent, hash_secret

# Unauthenticated GET /oauth/authorize stores one pending consent each (api_key mode):
# past this many, the soonest to expire are dropped rather than the store growing.
MAX_PENDING_CONSENTS = 10_000
# A1: a bad client or redirect URI is a 400 page, whatever the error's own status.
UNREDIRECTABLE_STATUS = 400


def unredirectable(request: Request, error: OAuthError) -> Response:
    """A1: a bad client or redirect URI gets a page (HTML for browsers), never a redirect."""
    log_refusal(request, error, status=UNREDIRECTABLE_STATUS)
    if "text/html" in request.headers.get("accept", ""):
        return error_page(error)
    return response(error, status=UNREDIRECTABLE_STATUS)


@dataclass
class AuthorizeHandler:
    ctx: Context

    async def __call__(self, request: Request) -> Response:
        await self.ctx.limit("authorize", request)
        query = request.query_params
        try:
            params = single_params(query, query.multi_items())
            client = await self._client(params.get("client_id"))
            redirect_uri, given = choose_redirect(client, params.get("redirect_uri"))
        except OAuthError as exc:
            return unredirectable(request, exc)
        state = params.get("state")
        try:
            scope, challenge, resource = validate_authorization(
                params,
                query.getlist("resource"),
                client,
                resource=self.ctx.settings.resource,
                issuer=self.ctx.settings.issuer,
            )
        except OAuthError as exc:
            if not await self._redirects_errors(client, redirect_uri):
                return unredirectable(request, exc)
            log_refusal(request, exc)
            return error_redirect(self.ctx, redirect_uri, exc, state)
        pending = PendingConsent(
            id_hash="",
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            redirect_uri_given=given,
            state=state,
            code_challenge=challenge,
            scope=scope,
            resource=resource,
            expires_at=self.ctx.clock() + self.ctx.settings.code_ttl,
        )
        if self.ctx.settings.consent == "auto":
            return await approve(self.ctx, pending)
        if self.ctx.people is not None:
            return await self.ctx.people.begin(request, client, pending)
        return await ask_consent(self.ctx, client, pending)

    async def _redirects_errors(self, client: Client, redirect_uri: str) -> bool:
        """Whether an error may be sent to the client's redirect URI (RFC 6749 §4.1.2.1).

        Anyone can self-register a redirect URI, so redirecting errors for every client
        would make the gateway an open redirector to any site (RFC 9700 §4.11.2: redirect
        only to URIs the server trusts). Errors go back to a client registered by the
        operator, to a loopback redirect URI (a native app on the user's own machine,
        RFC 8252: no site to be sent to), or to a client that has completed a flow (its
        redirect URI proved itself); everyone else gets the gateway's own error page.
        """
        if client.trusted or client.source == "static" or is_loopback(redirect_uri):
            return True
        return await self.ctx.store.client_was_used(client.client_id)

    async def _client(self, client_id: str | None) -> Client:
        if client_id is None:
            raise InvalidRequest("client_id is required")
        client = await self.ctx.find_client(client_id)
        if client is None:
            raise InvalidRequest("unknown client_id")
        return client


@dataclass
class ConsentHandler:
    """`POST /oauth/authorize/consent`: approve with MCP_API_KEY, or deny."""

    ctx: Context

    async def __call__(self, request: Request) -> Response:
        await self.ctx.limit("authorize", request)
        try:
            form = await self.ctx.form(request)
            pending = await self.ctx.store.take_consent(
                hash_secret(form.get("consent_id", "")), self.ctx.clock()
            )
            if pending is None:
                raise InvalidRequest("unknown, used or expired consent request")
            client = await self.ctx.find_client(pending.client_id)
            if client is None:
                raise InvalidRequest("the client no longer exists")
        except OAuthError as exc:
            return unredirectable(request, exc)
        if form.get("decision") != "approve":
            audit.info("oauth authorization denied by the user: client=%s", client.client_id)
            denied = AccessDenied("the resource owner denied the request")
            return error_redirect(self.ctx, pending.redirect_uri, denied, pending.state)
        if pending.subject is not None and self.ctx.people is not None:
            return await self.ctx.people.approve_signed_in(request, client, pending)
        if not same_secret(form.get("api_key"), self.ctx.settings.api_key):
            audit.warning(
                "oauth consent refused: wrong API key for client=%s from %s",
                client.client_id,
                peer(request),
            )
            return await ask_consent(self.ctx, client, pending, failed=True)
        return await approve(self.ctx, pending)


async def approve(ctx: Context, pending: PendingConsent) -> Response:
    code, record = new_code(pending, ttl=ctx.settings.code_ttl, now=ctx.clock())
    await ctx.store.save_code(record)
    if ctx.people is not None and pending.subject is not None:
        await ctx.people.granted(pending, record)
    audit.info(
        "oauth authorization granted: client=%s scope=%r redirect_host=%s",
        pending.client_id,
        pending.scope,
        redirect_host(pending.redirect_uri),
    )
    params = {"code": code, "state": pending.state, "iss": ctx.settings.issuer}
    return RedirectResponse(redirect_url(pending.redirect_uri, params), 302, headers=NO_STORE)


async def ask_consent(
    ctx: Context,
    client: Client,
    pending: PendingConsent,
    *,
    failed: bool = False,
    person: str | None = None,
) -> Response:
    consent_id = secrets.token_urlsafe(32)
    await ctx.store.save_consent(
        PendingConsent(**{**vars(pending), "id_hash": hash_secret(consent_id)}),
        limit=MAX_PENDING_CONSENTS,
    )
    return consent_page(
        consent_id=consent_id,
        client_name=client.client_name or client.client_id,
        redirect_uri=pending.redirect_uri,
        scope=pending.scope,
        failed=failed,
        person=person,
    )


def error_redirect(
    ctx: Context, redirect_uri: str, error: OAuthError, state: str | None
) -> Response:
    params = {
        **error.body(),
        "state": state,
        "iss": ctx.settings.issuer,
    }
    return RedirectResponse(redirect_url(redirect_uri, params), 302, headers=NO_STORE)
