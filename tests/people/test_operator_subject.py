"""A person can never pass for the operator: the operator's subjects (`user` of the
api_key/auto consent grants, `api-key` of MCP_API_KEY) are refused as provider subjects,
and the operator's own grants keep working under people sign-in."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.app import Gateway, create_app
from gateway.auth import API_KEY_IDENTITY
from gateway.errors import InvalidGrant
from gateway.oauth.authorize import RESOURCE_OWNER
from gateway.people.flow import GRANT, People, grant_key
from gateway.people.identity import Admission, SignedIn
from gateway.settings import Settings

pytestmark = pytest.mark.anyio
SCOPES = frozenset({"read", "write", "admin"})


@pytest.fixture
async def people() -> AsyncIterator[People]:
    settings = Settings(
        issuer="https://memory.example.com",
        consent="oidc",
        storage="memory://",
        oidc_issuer="https://accounts.example.com",
        oidc_client_id="cid",
        oidc_client_secret="secret",
        secret_key="x" * 32,
        rate_limit_per_minute=0,
        upstream="http://127.0.0.1:9",
    )
    gateway: Gateway = create_app(settings)
    await gateway.startup()
    assert gateway.authorization is not None
    assert gateway.authorization.people is not None
    yield gateway.authorization.people
    await gateway.shutdown()


@pytest.mark.parametrize("subject", [RESOURCE_OWNER, API_KEY_IDENTITY])
def test_a_provider_subject_equal_to_the_operators_is_refused(subject: str) -> None:
    who = SignedIn(subject, "alice@example.com", True, groups=("staff",))
    assert Admission().open
    reason = Admission().refusal(who)
    assert reason is not None
    assert "operator" in reason
    assert Admission(groups=frozenset({"staff"})).refusal(who) is not None
    assert Admission().refusal(SignedIn("user-1")) is None
    assert Admission().refusal(SignedIn("User")) is None


async def test_the_operators_grant_still_refreshes(people: People) -> None:
    """An api_key/auto-consent grant (no person's approval behind it) keeps its scopes."""
    assert await people.token_person(RESOURCE_OWNER, "c1", "fam-op", SCOPES) == (None, SCOPES)


async def test_a_persons_grant_under_the_operators_subject_is_not_the_operators(
    people: People,
) -> None:
    """Signed in before the refusal (sub `user`), the person's record since lapsed: the
    grant they approved must not pass as the operator's, whose checks are none."""
    store, now = people.records, people.clock()
    key = grant_key(RESOURCE_OWNER, "c1")
    grant = {"subject": RESOURCE_OWNER, "client_id": "c1", "scope": "read write"}
    await store.put_record(GRANT, key, {**grant, "families": ["fam-p"]}, now + 3600)
    with pytest.raises(InvalidGrant):
        await people.token_person(RESOURCE_OWNER, "c1", "fam-p", SCOPES)
    # Another family of the same client and subject is still the operator's.
    assert await people.token_person(RESOURCE_OWNER, "c1", "fam-op", SCOPES) == (None, SCOPES)


async def test_a_signed_in_person_named_like_the_operator_is_refused_at_the_token_endpoint(
    people: People,
) -> None:
    store, now = people.records, people.clock()
    who = SignedIn(RESOURCE_OWNER, "alice@example.com", True)
    await store.put_record("person", RESOURCE_OWNER, who.to_json(), now + 3600)
    families = {"families": ["fam-p"], "scope": "read"}
    await store.put_record(GRANT, grant_key(RESOURCE_OWNER, "c1"), families, now + 3600)
    with pytest.raises(InvalidGrant, match="no longer admitted"):
        await people.token_person(RESOURCE_OWNER, "c1", "fam-p", SCOPES)
