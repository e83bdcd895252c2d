"""Sign-in through the identity provider, consent by the person, connected apps.

    client → /oauth/authorize ─┬─ valid session cookie ─────────────────┐
                               └─ provider (code + PKCE + state + nonce) │
                                   → /oauth/callback → admit? ──────────┴→ consent page
                                                                          (or remembered)
                                                                          → code

The sign-in in progress lives server-side under a hash of `state`, is taken once (a
replayed or forged callback finds nothing) and is bound to the browser that started it
by a `__Host-` cookie, so a callback carried to another browser is refused.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.errors import NO_STORE, AccessDenied, InvalidGrant
from gateway.models import Client
from gateway.oauth.audit import audit
from gateway.oauth.authorize import RESOURCE_OWNER
from gateway.oauth.authorize_http import Approval
from gateway.oauth.client_auth import ClientLookup
from gateway.oauth.forms import read_form
from gateway.oauth.revocation import Revoker
from gateway.oauth.scopes import format_scope, parse_scope
from gateway.oauth.throttle import PeerLimit
from gateway.oauth.tokens import AccessToken, Person
from gateway.people import pages
from gateway.people.identity import Admission, SignedIn
from gateway.people.provider import IdentityProvider, ProviderError
from gateway.people.session import (
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    Sessions,
    clear_cookie,
    cookie_value,
    set_cookie,
)
from gateway.store.base import AuthorizationCode, PendingConsent, RecordStore, hash_secret

logger = logging.getLogger("gateway.people")

SIGNIN = "signin"
PERSON = "person"
GRANT = "grant"
# When a grant was last used, apart from the grant: the token endpoint never writes the
# grant itself, so a refresh racing the person's revocation cannot write it back.
GRANT_USED = "grant-used"
SEP = "\x1f"
PERSON_TTL = 400 * 86400
# Sign-ins in progress at most (each unauthenticated /oauth/authorize may start one):
# past this many the soonest to expire are dropped rather than the store growing.
MAX_SIGNINS = 10_000
# Grant families (one per approval) remembered per person and client; past this many
# the oldest is revoked, so the record stays small.
MAX_FAMILIES = 32
# One sign-in step (the authorization URL, or the code exchange with the ID token's keys
# and UserInfo) may take at most this many MCP_OIDC_TIMEOUTs in all: httpx's timeout
# bounds each read, not a provider answering a byte at a time.
PROVIDER_CALLS = 3

T = TypeVar("T")


def grant_key(subject: str, client_id: str) -> str:
    return f"{subject}{SEP}{client_id}"


@dataclass(frozen=True)
class People:
    """Built by gateway.authserver when MCP_OAUTH_CONSENT is oidc or github. `issuer`,
    `code_ttl` (a sign-in in progress lives as long as a code), `provider_timeout`,
    `remember_ttl` (MCP_OAUTH_CONSENT_REMEMBER_DAYS) and `refresh_ttl` come from the
    settings."""

    provider: IdentityProvider
    admission: Admission
    sessions: Sessions
    records: RecordStore
    find_client: ClientLookup
    revoker: Revoker
    approval: Approval
    limit: PeerLimit
    max_body: int
    issuer: str
    code_ttl: int
    provider_timeout: float
    remember_ttl: int
    refresh_ttl: int
    clock: Callable[[], float] = time.time

    @property
    def callback_uri(self) -> str:
        return f"{self.issuer}/oauth/callback"

    # the authorization request

    async def begin(self, request: Request, client: Client, pending: PendingConsent) -> Response:
        """/oauth/authorize for a person: straight to consent with a live session,
        otherwise through the provider."""
        session = self.sessions.read(request.headers.get("cookie"))
        if session is not None:
            who = await self._person(session.subject)
            if who is not None and self.admission.refusal(who) is None:
                return await self._consent(client, pending, who, [])
        return await self._to_provider({"pending": _pending_json(pending)})

    async def login(self, request: Request) -> Response:
        """GET /oauth/login?return_to=/path: sign in for the gateway's own pages."""
        # Each call may store a sign-in in progress, like /oauth/authorize: same budget.
        await self.limit("authorize", request)
        target = request.query_params.get("return_to", "/oauth/apps")
        if not target.startswith("/") or target.startswith("//") or "\\" in target:
            target = "/oauth/apps"
        if self.sessions.read(request.headers.get("cookie")) is not None:
            return RedirectResponse(target, 303, headers=NO_STORE)
        return await self._to_provider({"return_to": target})

    async def _to_provider(self, data: dict[str, Any]) -> Response:
        state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
        binding = secrets.token_urlsafe(32)
        try:
            url = await self._bounded(
                self.provider.authorization_url(
                    state=state, nonce=nonce, verifier=verifier, redirect_uri=self.callback_uri
                )
            )
        except ProviderError as exc:
            logger.warning("sign-in provider unavailable: %s", exc.message)
            return pages.trouble(exc.message, status=503, provider=self.provider.label)
        ttl = self.code_ttl
        record = {**data, "nonce": nonce, "verifier": verifier, "binding": hash_secret(binding)}
        await self.records.put_record(
            SIGNIN, hash_secret(state), record, self.clock() + ttl, limit=MAX_SIGNINS
        )
        response = RedirectResponse(url, 302, headers=NO_STORE)
        response.headers.append("set-cookie", set_cookie(SIGNIN_COOKIE, binding, ttl))
        return response

    # the provider's answer

    async def callback(self, request: Request) -> Response:
        await self.limit("authorize", request)
        query = request.query_params
        state = query.get("state")
        if not state or len(query.getlist("state")) != 1:
            return pages.bad_callback("the provider's answer has no state")
        record = await self.records.take_record(SIGNIN, hash_secret(state), self.clock())
        if record is None:
            audit.warning("sign-in callback with an unknown, used or expired state")
            return pages.bad_callback("it is unknown, already used or expired (state)")
        binding = cookie_value(request.headers.get("cookie"), SIGNIN_COOKIE)
        if binding is None or hash_secret(binding) != record["binding"]:
            audit.warning("sign-in callback from a browser that did not start it")
            return pages.bad_callback("it was started in another browser")
        pending = _pending_from(record.get("pending"))
        client = await self.find_client(pending.client_id) if pending else None
        if pending is not None and client is None:
            return pages.bad_callback("the application no longer exists")
        if "error" in query:
            return self._provider_refused(query.get("error", ""), pending)
        code = query.get("code")
        if not code:
            return pages.bad_callback("the provider's answer has no code")
        try:
            who = await self._bounded(
                self.provider.finish(
                    code=code,
                    nonce=record["nonce"],
                    verifier=record["verifier"],
                    redirect_uri=self.callback_uri,
                )
            )
        except ProviderError as exc:
            audit.warning("sign-in failed: %s", exc.message)
            status = 503 if exc.unreachable else 502
            return pages.trouble(exc.message, status=status, provider=self.provider.label)
        except Exception:
            # The provider's answers are input: one we cannot use is a bad gateway.
            logger.exception("sign-in failed on an unexpected answer from the provider")
            message = "its answer could not be used"
            return pages.trouble(message, status=502, provider=self.provider.label)
        cookies = [clear_cookie(SIGNIN_COOKIE)]
        reason = self.admission.refusal(who)
        if reason is not None:
            audit.warning("sign-in refused: subject=%s (%s)", who.subject, reason)
            back = None
            if pending is not None:
                denied = AccessDenied(f"the gateway does not admit this person: {reason}")
                back = self.approval.error_redirect(pending.redirect_uri, denied, pending.state)
            location = back.headers["location"] if back is not None else None
            name = (client.client_name or client.client_id) if client else None
            return pages.refused(who.label, reason, location, name, cookies)
        scopes = self.admission.scopes(who)
        await self.records.put_record(
            PERSON,
            who.subject,
            {**who.to_json(), "signed_in_at": self.clock()},
            self.clock() + PERSON_TTL,
        )
        _, session_cookie = self.sessions.issue(who.subject, self.admission.person(who), scopes)
        cookies.append(session_cookie)
        audit.info("person signed in: subject=%s email=%s", who.subject, who.email)
        if pending is None or client is None:
            response: Response = RedirectResponse(
                str(record.get("return_to") or "/oauth/apps"), 303, headers=NO_STORE
            )
        else:
            response = await self._consent(client, pending, who, [])
        for cookie in cookies:
            response.headers.append("set-cookie", cookie)
        return response

    async def _bounded(self, call: Awaitable[T]) -> T:
        """`call` within PROVIDER_CALLS provider timeouts in all; ProviderError after."""
        budget = self.provider_timeout * PROVIDER_CALLS
        try:
            async with asyncio.timeout(budget):
                return await call
        except TimeoutError:
            raise ProviderError(
                f"the provider did not finish answering within {budget:g} s", unreachable=True
            ) from None

    def _provider_refused(self, error: str, pending: PendingConsent | None) -> Response:
        audit.info("the identity provider refused the sign-in: error=%s", error[:64])
        if pending is None:
            return pages.bad_callback(f"the provider refused the sign-in ({error[:64]})")
        denied = AccessDenied("sign-in at the identity provider was cancelled or refused")
        return self.approval.error_redirect(pending.redirect_uri, denied, pending.state)

    # consent

    async def _consent(
        self, client: Client, pending: PendingConsent, who: SignedIn, cookies: list[str]
    ) -> Response:
        allowed = parse_scope(pending.scope) & self.admission.scopes(who)
        if not allowed:
            denied = AccessDenied("you may not hold any of the requested scopes")
            return self.approval.error_redirect(pending.redirect_uri, denied, pending.state)
        mine = PendingConsent(
            **{**asdict(pending), "scope": format_scope(allowed), "subject": who.subject}
        )
        if await self._remembered(who.subject, client.client_id, allowed):
            audit.info("remembered consent: subject=%s client=%s", who.subject, client.client_id)
            return await self.approval.approve(mine, self.granted)
        return await self.approval.ask(client, mine, person=who.label)

    async def approve_signed_in(
        self, request: Request, client: Client, pending: PendingConsent
    ) -> Response:
        """The consent form's Approve, from the browser of the person it names."""
        session = self.sessions.read(request.headers.get("cookie"))
        if session is None or session.subject != pending.subject:
            return pages.bad_callback("you are not signed in as the person this page was for")
        return await self.approval.approve(pending, self.granted)

    async def _remembered(self, subject: str, client_id: str, scopes: frozenset[str]) -> bool:
        remember = self.remember_ttl
        if remember <= 0:
            return False
        grant = await self.records.get_record(GRANT, grant_key(subject, client_id), self.clock())
        if grant is None:
            return False
        fresh = float(grant.get("approved_at", 0)) + remember > self.clock()
        return fresh and scopes <= parse_scope(grant.get("scope", ""))

    async def granted(self, pending: PendingConsent, code: AuthorizationCode) -> None:
        """A code was issued to a person: remember the approval for connected apps."""
        assert pending.subject is not None
        key = grant_key(pending.subject, pending.client_id)
        now = self.clock()
        old = await self.records.get_record(GRANT, key, now) or {}
        client = await self.find_client(pending.client_id)
        families = [*old.get("families", []), code.family]
        for dropped in families[:-MAX_FAMILIES]:
            await self.revoker.revoke_family(dropped)
        remembered = old.get("approved_at") if old.get("scope") == pending.scope else None
        grant = {
            "subject": pending.subject,
            "client_id": pending.client_id,
            "client_name": client.client_name if client else None,
            "scope": pending.scope,
            "families": families[-MAX_FAMILIES:],
            "approved_at": remembered or now,
        }
        await self.records.put_record(GRANT, key, grant, now + self._grant_ttl())

    def _grant_ttl(self) -> float:
        """A grant lives as long as its person's record can (it is not renewed by use:
        see GRANT_USED); past that the person signs in and approves again."""
        return max(self.refresh_ttl, self.remember_ttl, PERSON_TTL)

    # the token endpoint

    async def token_person(
        self, subject: str, client_id: str, family: str, scopes: frozenset[str]
    ) -> tuple[Person | None, frozenset[str]]:
        """Who a grant acts for, and its scopes within what they may hold now."""
        who = await self._person(subject)
        if who is None:
            if subject == RESOURCE_OWNER and not await self._person_family(
                subject, client_id, family
            ):
                return None, scopes  # the operator's grant (MCP_OAUTH_CONSENT=api_key)
            # The record lapsed (PERSON_TTL after the last sign-in) while the refresh
            # family, renewed at every use, lived on: without it neither admission nor
            # the connected-apps check could be made, so the person signs in again.
            raise InvalidGrant("sign in again: this person's sign-in record has expired")
        reason = self.admission.refusal(who)
        if reason is not None:
            raise InvalidGrant(f"this person is no longer admitted: {reason}")
        allowed = scopes & self.admission.scopes(who)
        if not allowed:
            raise InvalidGrant("this person may no longer hold any of the granted scopes")
        key = grant_key(subject, client_id)
        grant = await self.records.get_record(GRANT, key, self.clock())
        if grant is None or family not in grant.get("families", []):
            raise InvalidGrant("this application's access has been revoked")
        now = self.clock()
        await self.records.put_record(GRANT_USED, key, {"last_used": now}, now + self._grant_ttl())
        return self.admission.person(who), allowed

    async def _person_family(self, subject: str, client_id: str, family: str) -> bool:
        """Whether a person's approval issued this grant family: a person whose provider
        subject was the operator's (before such people were refused) is not the operator."""
        grant = await self.records.get_record(GRANT, grant_key(subject, client_id), self.clock())
        return grant is not None and family in grant.get("families", [])

    async def _person(self, subject: str) -> SignedIn | None:
        data = await self.records.get_record(PERSON, subject, self.clock())
        return SignedIn.from_json(data) if data is not None else None

    # connected apps and sign-out

    async def apps(self, request: Request) -> Response:
        session = self.sessions.read(request.headers.get("cookie"))
        if session is None:
            query = urlencode({"return_to": "/oauth/apps"})
            return RedirectResponse(f"/oauth/login?{query}", 303, headers=NO_STORE)
        cookies = []
        if self.clock() - session.issued_at > self.sessions.ttl / 2:
            session, cookie = await self._rotate(session)
            cookies.append(cookie)
        grants = [g for _, g in await list_grants(self.records, session.subject)]
        return pages.apps_page(_label(session), grants, _csrf(session), cookies)

    async def revoke_app(self, request: Request) -> Response:
        session = self._unsafe_session(request)
        form = await read_form(request, self.max_body)
        if session is None or form.get("csrf") != _csrf(session):
            return pages.bad_callback("the request did not come from your connected-apps page")
        client_id = form.get("client_id", "")
        revoked = await revoke_grant(self.records, self.revoker, session.subject, client_id)
        audit.info(
            "connected app revoked by the person: subject=%s client=%s found=%s",
            session.subject,
            client_id,
            revoked,
        )
        return RedirectResponse("/oauth/apps", 303, headers=NO_STORE)

    async def logout(self, request: Request) -> Response:
        session = self.sessions.read(request.headers.get("cookie"))
        if request.method == "GET":
            if session is None:
                return pages.signed_out([clear_cookie(SESSION_COOKIE)])
            return pages.logout_form(_csrf(session))
        if not self._same_origin(request):
            return pages.bad_callback("the sign-out did not come from this gateway's page")
        form = await read_form(request, self.max_body)
        if session is not None:
            if form.get("csrf") != _csrf(session):
                return pages.bad_callback("the sign-out did not come from this gateway's page")
            await self.revoker.revoke_access(session)
            audit.info("person signed out: subject=%s", session.subject)
        return pages.signed_out([clear_cookie(SESSION_COOKIE)])

    def _same_origin(self, request: Request) -> bool:
        """An unsafe request from this gateway's own pages (or a client sending no
        Origin, which browsers always send on POST)."""
        origin = request.headers.get("origin")
        return origin is None or origin == self.issuer

    def _unsafe_session(self, request: Request) -> AccessToken | None:
        if not self._same_origin(request):
            return None
        return self.sessions.read(request.headers.get("cookie"))

    async def _rotate(self, session: AccessToken) -> tuple[AccessToken, str]:
        person = session.person or Person()
        value, cookie = self.sessions.issue(session.subject, person, session.scopes)
        await self.revoker.revoke_access(session)
        fresh = self.sessions.read(f"{SESSION_COOKIE}={value}")
        assert fresh is not None
        return fresh, cookie


async def list_grants(store: RecordStore, subject: str | None) -> list[tuple[str, dict[str, Any]]]:
    """A person's grants (every person's when `subject` is None), by key."""
    prefix = "" if subject is None else f"{subject}{SEP}"
    now = time.time()
    used = dict(await store.list_records(GRANT_USED, prefix, now))
    grants = await store.list_records(GRANT, prefix, now)
    return [(key, {**grant, **used.get(key, {})}) for key, grant in grants]


async def revoke_grant(store: RecordStore, revoker: Revoker, subject: str, client_id: str) -> bool:
    """Revoke everything a person granted a client: its refresh tokens and access tokens
    (their families) stop working, and consent is asked again next time."""
    key = grant_key(subject, client_id)
    grant = await store.take_record(GRANT, key, time.time())
    await store.delete_record(GRANT_USED, key)
    if grant is None:
        return False
    for family in grant.get("families", []):
        await revoker.revoke_family(str(family))
    return True


def _csrf(session: AccessToken) -> str:
    return hash_secret(f"csrf\x00{session.jti}")


def _label(session: AccessToken) -> str:
    person = session.person
    return (person.email or person.name if person else None) or session.subject


def _pending_json(pending: PendingConsent) -> dict[str, Any]:
    return asdict(pending)


def _pending_from(data: object) -> PendingConsent | None:
    if not isinstance(data, dict):
        return None
    return PendingConsent(**data)


__all__ = ["People", "list_grants", "revoke_grant"]
