"""The token endpoint through the real app (PROTOCOL T1-T6, A3, A4, A7)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any
from urllib.parse import quote_plus

import jwt
import pytest

from gateway.store.base import RefreshToken
from tests.oauth.conftest import ISSUER, LOOPBACK_CB, Harness, basic

pytestmark = pytest.mark.anyio


async def offline_tokens(h: Harness) -> tuple[dict[str, Any], dict[str, Any]]:
    client = await h.public_client()
    code, verifier = await h.code_for(client["client_id"], scope="read write offline_access")
    response = await h.exchange(client["client_id"], code, verifier)
    assert response.status_code == 200, response.text
    return client, response.json()


def refresh_form(client_id: str, token: str, **extra: str) -> dict[str, str]:
    return {"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id, **extra}


def claims(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


async def test_t3_code_exchange_response_and_headers(harness: Harness) -> None:
    client = await harness.public_client()
    code, verifier = await harness.code_for(client["client_id"], scope="read")
    response = await harness.exchange(client["client_id"], code, verifier)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "read"
    assert "refresh_token" not in body  # only with offline_access
    decoded = claims(body["access_token"])
    assert decoded["aud"] == f"{ISSUER}/mcp"
    assert decoded["sub"] == "user"
    assert decoded["client_id"] == client["client_id"]


async def test_t1_body_must_be_form_encoded(harness: Harness) -> None:
    response = await harness.http.post("/oauth/token", json={"grant_type": "client_credentials"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_t1_repeated_parameter_is_invalid_request(harness: Harness) -> None:
    response = await harness.http.post(
        "/oauth/token",
        content=b"grant_type=client_credentials&grant_type=client_credentials&client_id=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.json()["error"] == "invalid_request"


async def test_t1_two_auth_methods_is_invalid_request(harness: Harness) -> None:
    client = await harness.register(client_name="m")
    response = await harness.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_secret": client["client_secret"]},
        headers=basic(client["client_id"], client["client_secret"]),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_t1_t2_invalid_client_401_with_basic_challenge(harness: Harness) -> None:
    client = await harness.register(client_name="m")
    response = await harness.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers=basic(client["client_id"], "wrong"),
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic")
    post = await harness.http.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client["client_id"],
            "client_secret": "x",
        },
    )
    assert post.status_code == 401
    assert "www-authenticate" not in post.headers


async def test_t1_client_secret_post_and_percent_encoded_basic(harness: Harness) -> None:
    client = await harness.register_as_operator(client_name="m")
    post = await harness.http.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
        },
    )
    assert post.status_code == 200
    raw = f"{quote_plus(client['client_id'])}:{quote_plus(client['client_secret'])}"
    encoded = await harness.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": "Basic " + base64.b64encode(raw.encode()).decode()},
    )
    assert encoded.status_code == 200


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({}, "invalid_request"),
        ({"grant_type": "password"}, "unsupported_grant_type"),
        ({"grant_type": "client_credentials"}, "unauthorized_client"),
        ({"grant_type": "authorization_code", "code": "nope"}, "invalid_grant"),
        ({"grant_type": "refresh_token", "refresh_token": "nope"}, "invalid_grant"),
    ],
)
async def test_t2_grant_errors_are_rfc6749_json(
    harness: Harness, form: dict[str, str], error: str
) -> None:
    client = await harness.public_client()
    response = await harness.http.post(
        "/oauth/token", data={"client_id": client["client_id"], **form}
    )
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"code_verifier": "w" * 50}, "invalid_grant"),
        ({"code_verifier": None}, "invalid_request"),
        ({"redirect_uri": "http://127.0.0.1:3000/other"}, "invalid_grant"),
        ({"resource": "https://other.example/mcp"}, "invalid_target"),
    ],
)
async def test_a3_a4_a7_code_bindings_checked(
    harness: Harness, extra: dict[str, str | None], error: str
) -> None:
    client = await harness.public_client()
    code, verifier = await harness.code_for(client["client_id"])
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": client["client_id"],
        "redirect_uri": LOOPBACK_CB,
        "code_verifier": verifier,
        **extra,
    }
    response = await harness.http.post(
        "/oauth/token", data={k: v for k, v in form.items() if v is not None}
    )
    assert response.json()["error"] == error


async def test_a7_code_bound_to_client(harness: Harness) -> None:
    a = await harness.public_client()
    b = await harness.public_client()
    code, verifier = await harness.code_for(a["client_id"])
    response = await harness.exchange(b["client_id"], code, verifier)
    assert response.json()["error"] == "invalid_grant"


async def test_a7_expired_code_rejected(harness: Harness) -> None:
    client = await harness.public_client()
    code, verifier = await harness.code_for(client["client_id"])
    harness.clock.now += harness.settings.code_ttl + 1
    assert (await harness.exchange(client["client_id"], code, verifier)).json()[
        "error"
    ] == "invalid_grant"


async def test_a4_resource_sets_audience_canonically(harness: Harness) -> None:
    client = await harness.public_client()
    code, verifier = await harness.code_for(
        client["client_id"], resource="HTTPS://GW.example:8443/mcp/"
    )
    token = (await harness.exchange(client["client_id"], code, verifier)).json()["access_token"]
    assert claims(token)["aud"] == f"{ISSUER}/mcp"


async def test_t4_replay_revokes_access_and_refresh_tokens(harness: Harness) -> None:
    client = await harness.public_client()
    code, verifier = await harness.code_for(client["client_id"], scope="read offline_access")
    first = (await harness.exchange(client["client_id"], code, verifier)).json()
    replay = await harness.exchange(client["client_id"], code, verifier)
    assert replay.json()["error"] == "invalid_grant"
    access = harness.tokens.verify(first["access_token"], audience=f"{ISSUER}/mcp")
    assert harness.server.revocations.is_revoked(access)
    refreshed = await harness.http.post(
        "/oauth/token", data=refresh_form(client["client_id"], first["refresh_token"])
    )
    assert refreshed.json()["error"] == "invalid_grant"


REPLAYED = "authorization code already used; tokens issued from it are revoked"
REVOKED_WHILE_EXCHANGING = "authorization code already used; its grant has been revoked"


async def test_t4_concurrent_exchanges_of_one_code_leave_no_live_token(
    harness: Harness,
) -> None:
    """Five exchanges of one code at once: one redeems it, four are replays (T4), and
    nothing issued from the code survives. Whether the winner answers 200 (its tokens
    then revoked) or 400 (a replay revoked the grant before it stored its refresh token)
    depends on the interleaving; both are pinned down one by one in the tests
    `test_t4_replay_revokes_access_and_refresh_tokens` and
    `test_t4_replay_between_redemption_and_refresh_save_fails_the_winner`."""
    client = await harness.public_client()
    cid = client["client_id"]
    code, verifier = await harness.code_for(cid, scope="read offline_access")
    responses = await asyncio.gather(*(harness.exchange(cid, code, verifier) for _ in range(5)))
    won = [r.json() for r in responses if r.status_code == 200]
    lost = [r.json() for r in responses if r.status_code != 200]
    assert [r.status_code for r in responses].count(400) == len(lost)
    assert [body["error_description"] for body in lost].count(REPLAYED) == 4, lost
    assert len(won) + [b["error_description"] for b in lost].count(REVOKED_WHILE_EXCHANGING) == 1
    for body in won:
        access = harness.tokens.verify(body["access_token"], audience=f"{ISSUER}/mcp")
        assert harness.server.revocations.is_revoked(access)
        refreshed = await harness.http.post(
            "/oauth/token", data=refresh_form(cid, body["refresh_token"])
        )
        assert refreshed.json()["error"] == "invalid_grant"


async def test_t4_replay_between_redemption_and_refresh_save_fails_the_winner(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving a loaded machine produces: the winner has redeemed the code, a
    replay revokes the grant, and only then does the winner store its refresh token. The
    store refuses it, and the winner gets invalid_grant rather than a dead token."""
    client = await harness.public_client()
    cid = client["client_id"]
    code, verifier = await harness.code_for(cid, scope="read offline_access")
    store = harness.server.store
    real_save = store.save_refresh
    redeemed, replayed = asyncio.Event(), asyncio.Event()
    attempted: list[tuple[RefreshToken, bool]] = []

    async def save_after_replay(token: RefreshToken) -> bool:
        redeemed.set()
        await asyncio.wait_for(replayed.wait(), timeout=10)
        attempted.append((token, await real_save(token)))
        return attempted[-1][1]

    monkeypatch.setattr(store, "save_refresh", save_after_replay)
    winner = asyncio.create_task(harness.exchange(cid, code, verifier))
    await asyncio.wait_for(redeemed.wait(), timeout=10)
    replay = await harness.exchange(cid, code, verifier)
    replayed.set()
    first = await winner
    assert replay.status_code == 400
    assert replay.json()["error_description"] == REPLAYED
    assert first.status_code == 400
    assert first.json() == {"error": "invalid_grant", "error_description": REVOKED_WHILE_EXCHANGING}
    [(token, saved)] = attempted
    assert saved is False
    assert await store.get_refresh(token.token_hash) is None


async def test_t5_refresh_rotates_and_old_token_replay_revokes_family(harness: Harness) -> None:
    client, first = await offline_tokens(harness)
    cid = client["client_id"]
    second = await harness.http.post("/oauth/token", data=refresh_form(cid, first["refresh_token"]))
    assert second.status_code == 200
    new = second.json()
    assert new["refresh_token"] != first["refresh_token"]
    harness.clock.now += harness.settings.refresh_grace_seconds + 1
    replay = await harness.http.post("/oauth/token", data=refresh_form(cid, first["refresh_token"]))
    assert replay.json()["error"] == "invalid_grant"
    # the whole family is gone: the legitimate successor no longer works either
    successor = await harness.http.post(
        "/oauth/token", data=refresh_form(cid, new["refresh_token"])
    )
    assert successor.json()["error"] == "invalid_grant"
    access = harness.tokens.verify(new["access_token"], audience=f"{ISSUER}/mcp")
    assert harness.server.revocations.is_revoked(access)


async def test_t5_same_predecessor_within_grace_gets_same_successor(harness: Harness) -> None:
    client, first = await offline_tokens(harness)
    cid = client["client_id"]
    a, b = await asyncio.gather(
        harness.http.post("/oauth/token", data=refresh_form(cid, first["refresh_token"])),
        harness.http.post("/oauth/token", data=refresh_form(cid, first["refresh_token"])),
    )
    assert a.status_code == b.status_code == 200
    assert a.json()["refresh_token"] == b.json()["refresh_token"]
    follow = await harness.http.post(
        "/oauth/token", data=refresh_form(cid, a.json()["refresh_token"])
    )
    assert follow.status_code == 200


async def test_t5_refresh_scope_narrows_not_widens_and_public_clients_refresh(
    harness: Harness,
) -> None:
    client, first = await offline_tokens(harness)
    cid = client["client_id"]
    wider = await harness.http.post(
        "/oauth/token", data=refresh_form(cid, first["refresh_token"], scope="read admin")
    )
    assert wider.json()["error"] == "invalid_scope"
    narrow = await harness.http.post(
        "/oauth/token", data=refresh_form(cid, first["refresh_token"], scope="read")
    )
    assert narrow.status_code == 200
    assert narrow.json()["scope"] == "read"
    back = await harness.http.post(
        "/oauth/token", data=refresh_form(cid, narrow.json()["refresh_token"])
    )
    assert back.json()["scope"] == "read write offline_access"


async def test_t5_refresh_token_bound_to_client(harness: Harness) -> None:
    _, first = await offline_tokens(harness)
    other = await harness.public_client()
    response = await harness.http.post(
        "/oauth/token", data=refresh_form(other["client_id"], first["refresh_token"])
    )
    assert response.json()["error"] == "invalid_grant"


async def test_t6_client_credentials_subject_is_client_and_scope_limited(harness: Harness) -> None:
    client = await harness.register_as_operator(client_name="svc", scope="read")
    ok = await harness.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "read"},
        headers=basic(client["client_id"], client["client_secret"]),
    )
    assert ok.status_code == 200
    assert "refresh_token" not in ok.json()
    assert claims(ok.json()["access_token"])["sub"] == client["client_id"]
    wider = await harness.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "write"},
        headers=basic(client["client_id"], client["client_secret"]),
    )
    assert wider.json()["error"] == "invalid_scope"


async def test_token_rate_limit_and_body_cap(make_harness: Any) -> None:
    h = await make_harness(rate_limit_per_minute=2, max_form_bytes=512)
    big = await h.http.post("/oauth/token", data={"grant_type": "x", "pad": "p" * 2000})
    assert big.status_code == 413
    statuses = [
        (await h.http.post("/oauth/token", data={"client_id": "x"})).status_code for _ in range(3)
    ]
    assert statuses[-1] == 429


async def test_cimd_client_id_url_resolved_through_resolver(make_harness: Any) -> None:
    from gateway.models import Client

    url = "https://app.example/client.json"

    class Resolver:
        async def resolve(self, client_id: str) -> Client:
            assert client_id == url
            return Client(url, (LOOPBACK_CB,), "none", source="cimd", scope="read")

    h = await make_harness(cimd_enabled=True, client_resolver=Resolver())
    code, verifier = await h.code_for(url)
    response = await h.exchange(url, code, verifier)
    assert response.status_code == 200
    assert response.json()["scope"] == "read"
