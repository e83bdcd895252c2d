"""GitHub sign-in (MCP_OAUTH_CONSENT=github): OAuth 2, not OpenID Connect.

Authlib's OAuth 2 client runs the web flow (state and PKCE S256, which GitHub supports);
GitHub issues no ID token, so the person is read from the REST API with the user's
token: `/user` (the stable numeric id is the subject), `/user/emails` (the primary
verified address) and `/user/orgs` (organisation logins, used as groups; needs the
`read:org` scope; paginated: every page is read, up to MAX_ORG_PAGES, and a list
that cannot be read whole refuses the sign-in). `nonce` has no place in OAuth 2 and
is unused; `state` is what binds the answer to the request. GitHub Enterprise
Server: MCP_GITHUB_URL and MCP_GITHUB_API_URL.
"""

from __future__ import annotations

from typing import Any

import httpx
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.integrations.httpx_client import OAuthError as AuthlibOAuthError

from gateway.people.identity import MAX_RULE_GROUPS, SignedIn, claim_email, claim_text
from gateway.people.provider import (
    TRANSPORT_ERRORS,
    ProviderError,
    describe,
    get_json,
    get_json_response,
)
from gateway.settings import Settings

GITHUB_SCOPES = "read:user user:email read:org"
# `/user/orgs` is paginated (30 a page by default): the most a page may hold, and the
# pages read at most (MAX_RULE_GROUPS organisations) before the sign-in is refused.
ORGS_PER_PAGE = 100
MAX_ORG_PAGES = 10
ACCEPT = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}


class GithubProvider:
    def __init__(self, settings: Settings) -> None:
        assert settings.github_client_id
        assert settings.github_client_secret
        self.client_id = settings.github_client_id
        self._secret = settings.github_client_secret
        self.web = settings.github_url
        self.api = settings.github_api_url
        self.timeout = settings.provider_timeout
        self._http = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)

    @property
    def label(self) -> str:
        return self.web

    async def aclose(self) -> None:
        await self._http.aclose()

    def _client(self, redirect_uri: str) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.client_id,
            client_secret=self._secret,
            scope=GITHUB_SCOPES,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_post",
            timeout=self.timeout,
            follow_redirects=False,
        )

    async def authorization_url(
        self, *, state: str, nonce: str, verifier: str, redirect_uri: str
    ) -> str:
        async with self._client(redirect_uri) as client:
            url, _ = client.create_authorization_url(
                f"{self.web}/login/oauth/authorize", state=state, code_verifier=verifier
            )
        return str(url)

    async def finish(self, *, code: str, nonce: str, verifier: str, redirect_uri: str) -> SignedIn:
        async with self._client(redirect_uri) as client:
            try:
                token = await client.fetch_token(
                    f"{self.web}/login/oauth/access_token",
                    code=code,
                    code_verifier=verifier,
                    headers={"Accept": "application/json"},
                )
            except AuthlibOAuthError as exc:
                raise ProviderError(f"GitHub refused the code: {exc.error}") from None
            except TRANSPORT_ERRORS as exc:
                raise ProviderError(
                    f"GitHub cannot be reached: {describe(exc)}", unreachable=True
                ) from None
            except ValueError:
                raise ProviderError("GitHub's token endpoint did not answer JSON") from None
        access = token.get("access_token")
        if not isinstance(access, str):
            raise ProviderError("GitHub answered without an access token")
        auth = {**ACCEPT, "Authorization": f"Bearer {access}"}
        user = await get_json(self._http, f"{self.api}/user", headers=auth)
        emails = await get_json(self._http, f"{self.api}/user/emails", headers=auth)
        orgs = await self._orgs(auth)
        return github_person(user, emails, orgs)

    async def _orgs(self, auth: dict[str, str]) -> list[Any]:
        """Every page of `/user/orgs`, or ProviderError: a `people:` rule or
        MCP_OAUTH_ALLOWED_GITHUB_ORGS naming an org on a page left unread would be
        escaped (or missed), so a list that cannot be read whole refuses the sign-in.
        The sign-in's total deadline (flow.PROVIDER_CALLS) bounds the time taken."""
        orgs: list[Any] = []
        url: str | None = f"{self.api}/user/orgs?per_page={ORGS_PER_PAGE}"
        for _ in range(MAX_ORG_PAGES):
            assert url is not None
            page, headers = await get_json_response(self._http, url, headers=auth)
            if not isinstance(page, list):
                raise ProviderError("GitHub's /user/orgs answer is not a list")
            orgs.extend(page)
            url = next_page(headers.get("link"), self.api)
            if url is None:
                return orgs
        raise ProviderError(
            f"GitHub lists more than {MAX_ORG_PAGES * ORGS_PER_PAGE} organisations for "
            "this account: the gateway cannot read them all, so it does not sign it in"
        )


def next_page(link: str | None, api: str) -> str | None:
    """The `rel="next"` URL of a `Link` header (RFC 8288), None on the last page.
    ProviderError when it leads away from the API (the user's token goes with it)."""
    for part in (link or "").split(","):
        target, _, params = part.strip().partition(";")
        rels = {
            rel
            for p in params.split(";")
            if p.strip().lower().startswith("rel=")
            for rel in p.strip()[4:].strip('"').lower().split()
        }
        if "next" not in rels:
            continue
        url = target.strip()
        if not (url.startswith("<") and url.endswith(">")):
            raise ProviderError("GitHub's /user/orgs Link header is malformed")
        url = url[1:-1]
        if not url.startswith(f"{api}/"):
            raise ProviderError("GitHub's /user/orgs next page is not on its API")
        return url
    return None


def github_person(user: Any, emails: Any, orgs: Any) -> SignedIn:
    """The person from GitHub's `/user`, `/user/emails` and `/user/orgs` answers."""
    if not isinstance(user, dict) or not isinstance(user.get("id"), int):
        raise ProviderError("GitHub's /user answer has no numeric id")
    primary = next(
        (
            e
            for e in (emails if isinstance(emails, list) else [])
            if isinstance(e, dict) and e.get("primary") and e.get("verified")
        ),
        None,
    )
    groups = tuple(
        str(o["login"]).lower()
        for o in (orgs if isinstance(orgs, list) else [])
        if isinstance(o, dict) and isinstance(o.get("login"), str)
    )
    login = claim_text(user.get("login"))
    return SignedIn(
        subject=str(user["id"]),
        email=claim_email(primary.get("email")) if primary else None,
        email_verified=True if primary else None,
        name=claim_text(user.get("name")) or login,
        groups=groups[:MAX_RULE_GROUPS],
        login=login.lower() if login else None,
    )
