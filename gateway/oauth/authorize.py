"""The authorization endpoint (RFC 6749 §4.1, PROTOCOL A1-A7) as rules, no HTTP.

With `auto` and `api_key` consent the gateway has one resource owner, the operator, and
every code carries the subject `RESOURCE_OWNER`; with `oidc` / `github` consent a code
carries the signed-in person's subject (gateway.people).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from urllib.parse import urlencode

from gateway.errors import InvalidRequest, UnauthorizedClient, UnsupportedResponseType
from gateway.models import Client
from gateway.oauth.pkce import validate_challenge
from gateway.oauth.redirects import find_redirect
from gateway.oauth.resource import resolve_resource
from gateway.oauth.scopes import consented_scopes, format_scope
from gateway.store.base import AuthorizationCode, PendingConsent, hash_secret

RESOURCE_OWNER = "user"


def choose_redirect(client: Client, presented: str | None) -> tuple[str, bool]:
    """The redirect URI to use and whether the request named it (A1, A2); else InvalidRequest.

    A loopback match returns the presented URI: the port is the client's to choose.
    """
    if presented is None:
        if len(client.redirect_uris) == 1:
            return client.redirect_uris[0], False
        raise InvalidRequest("redirect_uri is required")
    if find_redirect(client.redirect_uris, presented) is None:
        raise InvalidRequest("redirect_uri is not registered for this client")
    return presented, True


def validate_authorization(
    params: Mapping[str, str],
    resources: list[str],
    client: Client,
    *,
    resource: str,
    issuer: str | None = None,
) -> tuple[str, str | None, str]:
    """(scope, code_challenge, resource) of a valid request, or the OAuthError to redirect."""
    if params.get("response_type") != "code":
        raise UnsupportedResponseType("response_type must be 'code'")
    if "authorization_code" not in client.grant_types or "code" not in client.response_types:
        raise UnauthorizedClient("this client may not use the authorization code grant")
    challenge = validate_challenge(
        params.get("code_challenge"),
        params.get("code_challenge_method"),
        required=True,  # OAuth 2.1 §4.1.1: confidential clients use PKCE too
    )
    scope = format_scope(consented_scopes(params.get("scope"), client.scopes))
    audience = resolve_resource(resources, resource, issuer=issuer)
    return scope, challenge, audience


def redirect_url(redirect_uri: str, params: Mapping[str, str | None]) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{query}"


def new_code(pending: PendingConsent, *, ttl: int, now: float) -> tuple[str, AuthorizationCode]:
    """A 256-bit random code and its record, bound to everything it was issued for (A7)."""
    code = secrets.token_urlsafe(32)
    record = AuthorizationCode(
        code_hash=hash_secret(code),
        client_id=pending.client_id,
        redirect_uri=pending.redirect_uri,
        redirect_uri_given=pending.redirect_uri_given,
        code_challenge=pending.code_challenge,
        scope=pending.scope,
        resource=pending.resource,
        subject=pending.subject or RESOURCE_OWNER,
        family=secrets.token_urlsafe(16),
        expires_at=now + ttl,
    )
    return code, record
