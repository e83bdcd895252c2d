"""HTTP handlers of the authorization endpoint and the consent form (PROTOCOL A1-A7)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.errors import NO_STORE, AccessDenied, InvalidRequest, OAuthError, response
from gateway.models import Client
from gateway.oauth.audit import audit, log_refusal, peer
from gateway.oauth.authorize import choose_redirect, new_code, redirect_url, validate_authorization
from gateway.oauth.client_auth import ClientLookup
from gateway.oauth.consent import consent_page, error_page
from gateway.oauth.dcr import same_secret
from gateway.oauth.forms import read_form, single_params
from gateway.oauth.redirects import is_loopback, redirect_host
from gateway.oauth.throttle import PeerLimit
from gateway.store.base import (
    AuthorizationCode,
    ClientStore,
    CodeStore,
    ConsentStore,
    PendingConsent,
    hash_secret,
)

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


class SignIn(Protocol):
    """People signing in and approving for themselves (gateway.people.flow.People)."""

    async def begin(self, request: Request, client: Client, pending: PendingConsent) -> Response:
        """/oauth/authorize for a person."""

    async def approve_signed_in(
        self, request: Request, client: Client, pending: PendingConsent
    ) -> Response:
        """The consent form's Approve, from the browser of the person it names."""


Granted = Callable[[PendingConsent, AuthorizationCode], Awaitable[None]]


class _ApprovalStore(CodeStore, ConsentStore, Protocol):
    pass


@dataclass(frozen=True)
class Approval:
    """The answers to an authorization request once it is valid: the code (approved),
    the consent page (ask), or an error sent back to the client's redirect URI."""

    store: _ApprovalStore
    issuer: str
    code_ttl: int
    clock: Callable[[], float] = time.time

    async def approve(self, pending: PendingConsent, granted: Granted | None = None) -> Response:
        """Issue the code; `granted` (a person's approval) is told of it before the
        redirect is made."""
        code, record = new_code(pending, ttl=self.code_ttl, now=self.clock())
        await self.store.save_code(record)
        if granted is not None and pending.subject is not None:
            await granted(pending, record)
        audit.info(
            "oauth authorization granted: client=%s scope=%r redirect_host=%s",
            pending.client_id,
            pending.scope,
            redirect_host(pending.redirect_uri),
        )
        params = {"code": code, "state": pending.state, "iss": self.issuer}
        return RedirectResponse(redirect_url(pending.redirect_uri, params), 302, headers=NO_STORE)

    async def ask(
        self,
        client: Client,
        pending: PendingConsent,
        *,
        failed: bool = False,
        person: str | None = None,
    ) -> Response:
        consent_id = secrets.token_urlsafe(32)
        await self.store.save_consent(
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

    def error_redirect(self, redirect_uri: str, error: OAuthError, state: str | None) -> Response:
        params = {**error.body(), "state": state, "iss": self.issuer}
        return RedirectResponse(redirect_url(redirect_uri, params), 302, headers=NO_STORE)


@dataclass(frozen=True)
class AuthorizeHandler:
    """`GET /oauth/authorize`. `auto` approves at once (MCP_OAUTH_CONSENT=auto);
    `sign_in` is set when people sign in (oidc, github); otherwise the consent page."""

    limit: PeerLimit
    find_client: ClientLookup
    clients: ClientStore
    approval: Approval
    resource: str
    issuer: str
    code_ttl: int
    auto: bool = False
    sign_in: SignIn | None = None
    clock: Callable[[], float] = time.time

    async def __call__(self, request: Request) -> Response:
        await self.limit("authorize", request)
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
                resource=self.resource,
                issuer=self.issuer,
            )
        except OAuthError as exc:
            if not await self._redirects_errors(client, redirect_uri):
                return unredirectable(request, exc)
            log_refusal(request, exc)
            return self.approval.error_redirect(redirect_uri, exc, state)
        pending = PendingConsent(
            id_hash="",
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            redirect_uri_given=given,
            state=state,
            code_challenge=challenge,
            scope=scope,
            resource=resource,
            expires_at=self.clock() + self.code_ttl,
        )
        if self.auto:
            return await self.approval.approve(pending)
        if self.sign_in is not None:
            return await self.sign_in.begin(request, client, pending)
        return await self.approval.ask(client, pending)

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
        return await self.clients.client_was_used(client.client_id)

    async def _client(self, client_id: str | None) -> Client:
        if client_id is None:
            raise InvalidRequest("client_id is required")
        client = await self.find_client(client_id)
        if client is None:
            raise InvalidRequest("unknown client_id")
        return client


@dataclass(frozen=True)
class ConsentHandler:
    """`POST /oauth/authorize/consent`: approve with MCP_API_KEY, or deny."""

    limit: PeerLimit
    max_body: int
    consents: ConsentStore
    find_client: ClientLookup
    approval: Approval
    api_key: str | None
    sign_in: SignIn | None = None
    clock: Callable[[], float] = time.time

    async def __call__(self, request: Request) -> Response:
        await self.limit("authorize", request)
        try:
            form = await read_form(request, self.max_body)
            pending = await self.consents.take_consent(
                hash_secret(form.get("consent_id", "")), self.clock()
            )
            if pending is None:
                raise InvalidRequest("unknown, used or expired consent request")
            client = await self.find_client(pending.client_id)
            if client is None:
                raise InvalidRequest("the client no longer exists")
        except OAuthError as exc:
            return unredirectable(request, exc)
        if form.get("decision") != "approve":
            audit.info("oauth authorization denied by the user: client=%s", client.client_id)
            denied = AccessDenied("the resource owner denied the request")
            return self.approval.error_redirect(pending.redirect_uri, denied, pending.state)
        if pending.subject is not None and self.sign_in is not None:
            return await self.sign_in.approve_signed_in(request, client, pending)
        if not same_secret(form.get("api_key"), self.api_key):
            audit.warning(
                "oauth consent refused: wrong API key for client=%s from %s",
                client.client_id,
                peer(request),
            )
            return await self.approval.ask(client, pending, failed=True)
        return await self.approval.approve(pending)
