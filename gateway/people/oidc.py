"""The gateway as an OpenID Connect relying party (MCP_OAUTH_CONSENT=oidc).

Discovery (OpenID Connect Discovery 1.0; the document's `issuer` must equal
MCP_OIDC_ISSUER), the authorization request with state, nonce and PKCE S256, and the
code exchange are Authlib's OAuth 2 client; the ID token (signature against the
provider's JWKS, `iss`, `aud`, `azp`, `exp`, `iat`, `nonce`) is checked by joserfc.
Claims missing from the ID token (`email`, the groups claim) are taken from the UserInfo
endpoint when the provider has one, whose `sub` must be the ID token's.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.integrations.httpx_client import OAuthError as AuthlibOAuthError
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from gateway.people.identity import SignedIn, claim_email, claim_groups, claim_text
from gateway.people.provider import TRANSPORT_ERRORS, ProviderError, describe, get_json
from gateway.settings import Settings

DISCOVERY_TTL = 3600.0
# A key set is fetched again for an unknown `kid` at most this often (key rotation).
JWKS_REFETCH_SECONDS = 60.0
LEEWAY_SECONDS = 60
ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"]


class OidcProvider:
    def __init__(self, settings: Settings, *, clock: Any = time.time) -> None:
        assert settings.oidc_issuer
        assert settings.oidc_client_id
        assert settings.oidc_client_secret
        self.issuer = settings.oidc_issuer
        self.client_id = settings.oidc_client_id
        self._secret = settings.oidc_client_secret
        self.scopes = settings.oidc_scopes
        self.groups_claim = settings.oidc_groups_claim
        self.timeout = settings.provider_timeout
        self._http = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        self._clock = clock
        self._lock = asyncio.Lock()
        self._discovery: dict[str, Any] | None = None
        self._discovered_at = 0.0
        self._keys: KeySet | None = None
        self._keys_at = 0.0

    @property
    def label(self) -> str:
        return self.issuer

    async def aclose(self) -> None:
        await self._http.aclose()

    async def authorization_url(
        self, *, state: str, nonce: str, verifier: str, redirect_uri: str
    ) -> str:
        doc = await self.discovery()
        async with self._client(doc, redirect_uri) as client:
            url, _ = client.create_authorization_url(
                _endpoint(doc, "authorization_endpoint"),
                state=state,
                nonce=nonce,
                code_verifier=verifier,
            )
        return str(url)

    async def finish(self, *, code: str, nonce: str, verifier: str, redirect_uri: str) -> SignedIn:
        doc = await self.discovery()
        async with self._client(doc, redirect_uri) as client:
            try:
                token = await client.fetch_token(
                    _endpoint(doc, "token_endpoint"),
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=verifier,
                )
            except AuthlibOAuthError as exc:
                raise ProviderError(f"the provider refused the code: {exc.error}") from None
            except TRANSPORT_ERRORS as exc:
                raise ProviderError(
                    f"the provider's token endpoint cannot be reached: {describe(exc)}",
                    unreachable=True,
                ) from None
            except ValueError:
                raise ProviderError("the provider's token endpoint did not answer JSON") from None
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise ProviderError("the provider answered without an ID token")
        claims = await self.verify_id_token(id_token, nonce)
        access = token.get("access_token")
        if isinstance(access, str) and _needs_userinfo(claims, self.groups_claim):
            claims = await self._with_userinfo(doc, claims, access)
        return self.signed_in(claims)

    async def verify_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        """The ID token's claims, checked (OpenID Connect Core §3.1.3.7); ProviderError."""
        try:
            decoded = jwt.decode(id_token, await self._key_set(), algorithms=ID_TOKEN_ALGORITHMS)
        except (JoseError, ValueError, TypeError, KeyError) as first:
            # An unknown `kid`: the provider may have rotated its keys.
            if not await self._refetch_keys():
                raise ProviderError(f"the ID token's signature does not verify: {first}") from None
            try:
                decoded = jwt.decode(
                    id_token, await self._key_set(), algorithms=ID_TOKEN_ALGORITHMS
                )
            except (JoseError, ValueError, TypeError, KeyError) as exc:
                raise ProviderError(f"the ID token's signature does not verify: {exc}") from None
        registry = jwt.JWTClaimsRegistry(
            leeway=LEEWAY_SECONDS,
            iss={"essential": True, "value": self.issuer},
            sub={"essential": True},
            aud={"essential": True, "value": self.client_id},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        try:
            registry.validate(decoded.claims)
        except (JoseError, ValueError, TypeError) as exc:
            raise ProviderError(f"the ID token was refused: {exc}") from None
        claims = dict(decoded.claims)
        audience = claims.get("aud")
        if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != self.client_id:
            raise ProviderError("the ID token names other audiences and not us as azp")
        if "azp" in claims and claims["azp"] != self.client_id:
            # OIDC Core §3.1.3.7 (5): an azp present must be our client_id.
            raise ProviderError("the ID token was issued to another party (azp)")
        return claims

    def signed_in(self, claims: dict[str, Any]) -> SignedIn:
        verified = claims.get("email_verified")
        return SignedIn(
            subject=str(claims["sub"]),
            email=claim_email(claims.get("email")),
            email_verified=verified if isinstance(verified, bool) else None,
            name=claim_text(claims.get("name")) or claim_text(claims.get("preferred_username")),
            groups=claim_groups(claims.get(self.groups_claim)),
        )

    async def discovery(self) -> dict[str, Any]:
        async with self._lock:
            now = self._clock()
            if self._discovery is None or now - self._discovered_at > DISCOVERY_TTL:
                url = f"{self.issuer}/.well-known/openid-configuration"
                doc = await get_json(self._http, url)
                if not isinstance(doc, dict) or doc.get("issuer") != self.issuer:
                    raise ProviderError(
                        f"{url} names another issuer ({_issuer_of(doc)!r}, not {self.issuer!r})"
                    )
                self._discovery, self._discovered_at = doc, now
            return self._discovery

    def _client(self, doc: dict[str, Any], redirect_uri: str) -> AsyncOAuth2Client:
        methods = doc.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        method = (
            "client_secret_post"
            if "client_secret_basic" not in methods and "client_secret_post" in methods
            else "client_secret_basic"
        )
        return AsyncOAuth2Client(
            client_id=self.client_id,
            client_secret=self._secret,
            scope=self.scopes,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method=method,
            timeout=self.timeout,
            follow_redirects=False,
        )

    async def _key_set(self) -> KeySet:
        if self._keys is None:
            await self._refetch_keys(force=True)
        assert self._keys is not None
        return self._keys

    async def _refetch_keys(self, *, force: bool = False) -> bool:
        now = self._clock()
        if not force and now - self._keys_at < JWKS_REFETCH_SECONDS:
            return False
        doc = await self.discovery()
        data = await get_json(self._http, _endpoint(doc, "jwks_uri"))
        try:
            self._keys = KeySet.import_key_set(data)
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise ProviderError(f"the provider's key set is unusable: {exc}") from None
        self._keys_at = now
        return True

    async def _with_userinfo(
        self, doc: dict[str, Any], claims: dict[str, Any], access_token: str
    ) -> dict[str, Any]:
        endpoint = doc.get("userinfo_endpoint")
        if not isinstance(endpoint, str):
            return claims
        info = await get_json(
            self._http, endpoint, headers={"Authorization": f"Bearer {access_token}"}
        )
        if not isinstance(info, dict) or info.get("sub") != claims["sub"]:
            raise ProviderError("the UserInfo answer is about someone else (sub differs)")
        return merge_userinfo(claims, info)


def merge_userinfo(claims: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """The ID token's claims completed by UserInfo's. Pure. `email` and
    `email_verified` come as a pair from one source: UserInfo's `email_verified` is
    about UserInfo's address, never proof for a different one in the ID token."""
    merged = {**info, **{k: v for k, v in claims.items() if v is not None}}
    if claims.get("email") is not None:
        merged.pop("email_verified", None)
        if claims.get("email_verified") is not None:
            merged["email_verified"] = claims["email_verified"]
        elif info.get("email") == claims["email"] and "email_verified" in info:
            merged["email_verified"] = info["email_verified"]
    return merged


def _needs_userinfo(claims: dict[str, Any], groups_claim: str) -> bool:
    return "email" not in claims or groups_claim not in claims


def _endpoint(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise ProviderError(f"the provider's discovery document has no {name}")
    return value


def _issuer_of(doc: object) -> object:
    return doc.get("issuer") if isinstance(doc, dict) else None
