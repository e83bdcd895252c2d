"""The relying party's checks against the real provider, and the provider going away."""

from __future__ import annotations

import secrets

import httpx
import pytest

from gateway.people.oidc import OidcProvider
from gateway.people.provider import ProviderError
from gateway.settings import Settings
from tests.clients.consent import redirect_params
from tests.e2e.support import Pkce, register
from tests.people.support import (
    OIDC_CLIENT_ID,
    OIDC_CLIENT_SECRET,
    PeopleStack,
    PersonAgent,
    authorize_in_process,
    find_node,
    people_stack,
)
from tests.people.test_sign_in import authorize_url, gateway_http
from tests.ports import reserved_port

pytestmark = pytest.mark.anyio


def relying_party(people: PeopleStack) -> OidcProvider:
    settings = Settings(
        issuer=people.gateway.url,
        consent="oidc",
        oidc_issuer=people.provider.issuer,
        oidc_client_id=OIDC_CLIENT_ID,
        oidc_client_secret=OIDC_CLIENT_SECRET,
        oidc_scopes="openid email profile groups",
    )
    return OidcProvider(settings)


async def provider_code(people: PeopleStack, rp: OidcProvider, nonce: str, verifier: str) -> str:
    """Sign bob in at the provider for `rp`'s request; the code it sends back."""
    url = await rp.authorization_url(
        state=secrets.token_urlsafe(16),
        nonce=nonce,
        verifier=verifier,
        redirect_uri=people.provider.redirect_uri,
    )
    agent = PersonAgent(people, "bob")
    callback = await agent.until_callback(url)
    await agent.aclose()
    return redirect_params(callback)["code"]


async def test_id_token_nonce_and_code_checked_against_the_real_provider(
    people: PeopleStack,
) -> None:
    """A real ID token for another nonce is refused; a code is good once."""
    rp = relying_party(people)
    verifier = secrets.token_urlsafe(48)
    code = await provider_code(people, rp, "the-nonce-we-sent", verifier)
    with pytest.raises(ProviderError, match="nonce"):
        await rp.finish(
            code=code,
            nonce="another-nonce",
            verifier=verifier,
            redirect_uri=people.provider.redirect_uri,
        )
    code = await provider_code(people, rp, "n2", verifier)
    who = await rp.finish(
        code=code, nonce="n2", verifier=verifier, redirect_uri=people.provider.redirect_uri
    )
    assert (who.subject, who.email, who.groups) == ("bob", "bob@example.com", ("staff",))
    with pytest.raises(ProviderError, match="refused the code"):
        await rp.finish(
            code=code, nonce="n2", verifier=verifier, redirect_uri=people.provider.redirect_uri
        )
    await rp.aclose()


async def test_id_token_signature_is_checked(people: PeopleStack) -> None:
    rp = relying_party(people)
    verifier = secrets.token_urlsafe(48)
    code = await provider_code(people, rp, "n3", verifier)
    async with httpx.AsyncClient() as http:
        token = await http.post(
            f"{people.provider.issuer}/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "code_verifier": verifier,
                "redirect_uri": people.provider.redirect_uri,
            },
            auth=(OIDC_CLIENT_ID, OIDC_CLIENT_SECRET),
        )
    id_token = token.json()["id_token"]
    claims = await rp.verify_id_token(id_token, "n3")
    assert claims["sub"] == "bob"
    head, payload, signature = id_token.split(".")
    forged = f"{head}.{payload}.{signature[:-4]}AAAA"
    with pytest.raises(ProviderError, match="signature"):
        await rp.verify_id_token(forged, "n3")
    await rp.aclose()


async def test_provider_unreachable_at_authorize_gives_a_page_not_a_500() -> None:
    page, _ = await authorize_in_process(f"http://127.0.0.1:{reserved_port()}", 2.0)
    assert page.status_code == 503
    assert page.headers["content-type"].startswith("text/html")
    assert "cannot be reached" in page.text
    assert "Retry-After" in page.headers


async def test_provider_down_at_the_callback_gives_a_page_not_a_500(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    find_node()
    with people_stack(tmp_path_factory.mktemp("people-down")) as stack:
        with gateway_http(stack) as http:
            client_id = register(http)
        agent = PersonAgent(stack, "bob")
        callback = await agent.until_callback(authorize_url(stack, client_id, Pkce.new()))
        stack.provider.stop()
        page = await agent.http.get(callback)
        await agent.aclose()
    assert page.status_code == 503, page.text
    assert "cannot be reached" in page.text
    assert "Nothing was granted" in page.text
