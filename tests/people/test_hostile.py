"""gateway.people against a hostile or failing world: a provider that answers too slowly
to finish, claims shaped to slip past admission, a grant whose person is gone. Real
sockets on loopback for the provider; the gateway in process (httpx.ASGITransport)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.errors import InvalidGrant
from gateway.oauth.tokens import MAX_CLAIM_CHARS
from gateway.people.flow import GRANT, PERSON, grant_key, list_grants, revoke_grant
from gateway.people.identity import Admission, SignedIn, claim_groups
from gateway.people.oidc import OidcProvider, merge_userinfo
from gateway.people.provider import ProviderError
from gateway.policy import Ceiling
from gateway.settings import Settings
from tests.people.support import authorize_in_process
from tests.people.test_in_process import app, client, people_of  # noqa: F401  (fixture)
from tests.ports import reserved_port

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def dribbling_server(seconds: float) -> AsyncIterator[int]:
    """An HTTP server on loopback that answers 200 at once, then one body byte every
    0.2 s for `seconds`: every read is quick, the answer never finishes in time."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: 100000\r\n\r\n"
            )
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.2)
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()


async def test_a_provider_dribbling_its_answer_is_cut_off_by_a_total_deadline() -> None:
    async with dribbling_server(60) as port:
        page, took = await authorize_in_process(f"http://127.0.0.1:{port}", 1.0)
    assert page.status_code == 503, page.text
    assert took < 6, took  # a few provider timeouts, not the provider's whole dribble


def test_an_over_long_email_is_not_cut_into_an_allowed_one() -> None:
    """`"aaa…@allowed.test"@evil.test` is one (odd but valid) verified address at
    evil.test; cut at MAX_CLAIM_CHARS it would read as an allowed.test address."""
    settings = Settings(
        issuer="https://localhost:9",
        consent="oidc",
        storage="memory://",
        oidc_issuer="https://accounts.example.com",
        oidc_client_id="x",
        oidc_client_secret="y",
    )
    inside = "@allowed.test"
    local = '"' + "a" * (MAX_CLAIM_CHARS - 1 - len(inside)) + inside
    email = f'{local}"@evil.test'
    who = OidcProvider(settings).signed_in(
        {"sub": "s", "email": email, "email_verified": True, "name": "Eve"}
    )
    rules = Admission(domains=frozenset({"allowed.test"}), emails=frozenset({local[1:]}))
    assert rules.refusal(who) is not None
    assert who.email is None or who.email == email


async def test_a_grant_whose_person_record_is_gone_is_refused(
    app: tuple[object, object],  # noqa: F811
) -> None:
    """A refresh family lives as long as it is used; the person's record (and with it
    the admission and connected-apps checks) must not silently fall away."""
    gateway, _ = app
    people = people_of(gateway)  # type: ignore[arg-type]
    with pytest.raises(InvalidGrant):
        await people.token_person("p-gone", "client-1", "family-1", frozenset({"read"}))
    # The operator's grants (MCP_OAUTH_CONSENT=api_key before) carry no person.
    assert await people.token_person("user", "client-1", "f", frozenset({"read"})) == (
        None,
        frozenset({"read"}),
    )


def test_a_unicode_address_does_not_fold_onto_an_allowed_ascii_one() -> None:
    """str.lower() maps KELVIN SIGN (U+212A) to 'k': a different, verified address
    must not become the allowed 'kate@x.test' or an address at 'kelp.test'."""
    rules = Admission(emails=frozenset({"kate@x.test"}), domains=frozenset({"kelp.test"}))
    assert rules.refusal(SignedIn("k1", "\u212aate@x.test", True)) is not None
    assert rules.refusal(SignedIn("k2", "eve@\u212aelp.test", True)) is not None
    assert rules.refusal(SignedIn("k3", "KATE@X.test", True)) is None
    assert rules.refusal(SignedIn("k4", "Eve@KELP.TEST", True)) is None


def test_a_ceiling_group_past_the_first_64_still_holds() -> None:
    """A person in many groups whose read-only group comes late in the claim keeps
    the read-only ceiling (cutting the list at 64 gave them read write)."""
    ceiling = Ceiling(frozenset({"contractors"}), frozenset(), frozenset({"read"}))
    rules = Admission(ceilings=(ceiling,))
    groups = claim_groups([f"team-{i}" for i in range(100)] + ["contractors"])
    assert rules.scopes(SignedIn("c1", groups=groups)) == {"read"}


def test_userinfo_verifies_only_its_own_address() -> None:
    token = {"sub": "s", "email": "eve@allowed.test"}  # no email_verified in the ID token
    info = {"sub": "s", "email": "eve@evil.test", "email_verified": True}
    assert merge_userinfo(token, info).get("email_verified") is None
    same = {"sub": "s", "email": "eve@allowed.test", "email_verified": True}
    assert merge_userinfo(token, same)["email_verified"] is True
    assert merge_userinfo({"sub": "s"}, info)["email"] == "eve@evil.test"
    assert merge_userinfo({"sub": "s"}, info)["email_verified"] is True


async def test_a_refresh_racing_the_revocation_does_not_bring_the_grant_back(
    tmp_path: Path,
) -> None:
    """The person revokes an app on the connected-apps page while the app refreshes:
    the refresh's bookkeeping must not write the revoked grant back (with it, the
    remembered consent would approve the app again without asking)."""
    from tests.people.test_in_process import settings as people_settings

    gateway = create_app(people_settings(storage=f"sqlite:///{tmp_path / 'g.db'}"))
    await gateway.startup()
    try:
        people = people_of(gateway)
        store, now = people.records, time.time()
        resurrected = 0
        for attempt in range(20):
            subject, client_id = f"p{attempt}", "client-1"
            await store.put_record(PERSON, subject, {"subject": subject}, now + 3600)
            grant = {"subject": subject, "client_id": client_id, "scope": "read"}
            key = grant_key(subject, client_id)
            await store.put_record(GRANT, key, {**grant, "families": ["f"]}, now + 3600)

            async def revoke(after: float, subject: str = subject) -> bool:
                await asyncio.sleep(after)  # the click lands anywhere in the refresh
                return await revoke_grant(store, people.revoker, subject, "client-1")

            await asyncio.gather(
                people.token_person(subject, client_id, "f", frozenset({"read"})),
                revoke(attempt * 0.0002),
                return_exceptions=True,
            )
            resurrected += await store.get_record(GRANT, key, now) is not None
    finally:
        await gateway.shutdown()
    assert resurrected == 0


async def test_an_unverified_email_is_not_passed_on_to_the_backend(
    app: tuple[object, object],  # noqa: F811
) -> None:
    """Admitted by group, with an email the provider does not vouch for (Entra ID's
    editable `email`): tokens and X-Auth-Email must not name that address."""
    gateway, clock = app
    people = people_of(gateway)  # type: ignore[arg-type]
    store, now = people.records, clock()  # type: ignore[operator]
    for subject, verified in (("eve", None), ("ann", True)):
        who = {"subject": subject, "email": f"{subject}@victim.test", "email_verified": verified}
        await store.put_record(PERSON, subject, who, now + 3600)
        grant = {"subject": subject, "client_id": "c", "scope": "read", "families": ["f"]}
        await store.put_record(GRANT, grant_key(subject, "c"), grant, now + 3600)
    eve, _ = await people.token_person("eve", "c", "f", frozenset({"read"}))
    ann, _ = await people.token_person("ann", "c", "f", frozenset({"read"}))
    assert eve is not None
    assert eve.email is None
    assert ann is not None
    assert ann.email == "ann@victim.test"
    # The use is recorded apart from the grant, and the listings still show it.
    [(_, listed)] = await list_grants(store, "ann")
    assert listed["last_used"] == now


async def test_sign_in_starts_from_one_address_are_rate_limited() -> None:
    """/oauth/login stores a sign-in in progress for anyone, like /oauth/authorize: it
    shares that endpoint's per-address budget (else one address could evict every
    real person's sign-in from the capped store)."""
    from tests.people.test_in_process import settings as people_settings

    dead = reserved_port()  # nothing listens there
    gateway = create_app(
        people_settings(rate_limit_per_minute=5, oidc_issuer=f"http://127.0.0.1:{dead}")
    )
    await gateway.startup()
    try:
        async with client(gateway) as http:
            statuses = [(await http.get("/oauth/login")).status_code for _ in range(8)]
    finally:
        await gateway.shutdown()
    assert 429 in statuses, statuses


async def test_an_id_token_issued_to_another_party_is_refused() -> None:
    """aud is us but azp names another client (OIDC Core §3.1.3.7 (5))."""
    from joserfc import jwt
    from joserfc.jwk import KeySet, RSAKey

    settings = Settings(
        issuer="https://localhost:9",
        consent="oidc",
        storage="memory://",
        oidc_issuer="https://idp.test",
        oidc_client_id="cid",
        oidc_client_secret="secret-0123456789",
    )
    rp = OidcProvider(settings)
    key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    rp._keys, rp._keys_at = KeySet([key]), time.time()
    now = int(time.time())
    claims = {"iss": "https://idp.test", "sub": "u", "aud": "cid", "exp": now + 300}
    claims |= {"iat": now, "nonce": "n"}
    header = {"alg": "RS256", "kid": "k1"}
    try:
        assert (await rp.verify_id_token(jwt.encode(header, claims, key), "n"))["sub"] == "u"
        mine = jwt.encode(header, {**claims, "azp": "cid"}, key)
        assert (await rp.verify_id_token(mine, "n"))["sub"] == "u"
        with pytest.raises(ProviderError, match="azp"):
            await rp.verify_id_token(jwt.encode(header, {**claims, "azp": "other"}, key), "n")
    finally:
        await rp.aclose()
