"""Pure rules of gateway.people: admission, scopes, GitHub's answers, cookies, headers,
and the sign-in settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.people.github import github_person
from gateway.people.identity import Admission, SignedIn, claim_groups
from gateway.people.provider import ProviderError
from gateway.people.session import cookie_value, set_cookie
from gateway.policy import Ceiling, Policy, PolicyError
from gateway.principal import Principal
from gateway.proxy.headers import groups_value, identity_headers, strip_own_cookies
from gateway.settings import Settings, SettingsError

ALICE = SignedIn("a1", "Alice@Example.com", True, "Alice", ("staff", "memory-admins"))
RULES = Admission(
    emails=frozenset({"ceo@other.test"}),
    domains=frozenset({"example.com"}),
    groups=frozenset({"partners"}),
    admin_groups=frozenset({"memory-admins"}),
)


@pytest.mark.parametrize(
    ("who", "admitted"),
    [
        (ALICE, True),
        (SignedIn("c", "ceo@other.test", True), True),
        (SignedIn("c", "CEO@other.test", None), False),  # no email_verified claim
        (SignedIn("p", "p@nowhere.test", True, groups=("partners",)), True),
        (SignedIn("m", "m@elsewhere.test", True), False),
        (SignedIn("e", "e@example.com", False), False),  # unverified
        (SignedIn("n"), False),
        (SignedIn("x", "x@example.com.evil.test", True), False),
        (SignedIn("y", "y@sub.example.com", True), False),  # domains match exactly
    ],
)
def test_admission(who: SignedIn, admitted: bool) -> None:
    assert (RULES.refusal(who) is None) is admitted


def test_absent_email_verified_counts_only_when_allowed() -> None:
    who = SignedIn("c", "CEO@other.test", None)
    assert RULES.refusal(who) is not None
    lenient = Admission(emails=frozenset({"ceo@other.test"}), require_verified=False)
    assert lenient.refusal(who) is None
    assert lenient.refusal(SignedIn("c", "ceo@other.test", False)) is not None


def test_no_rule_admits_everyone_and_says_so() -> None:
    assert Admission().open
    assert Admission().refusal(SignedIn("anyone")) is None
    assert not RULES.open


def test_refusal_says_why() -> None:
    assert "not among the allowed" in (RULES.refusal(SignedIn("m", "m@x.test", True)) or "")
    assert "not verified" in (RULES.refusal(SignedIn("e", "e@example.com", False)) or "")


def test_admin_only_for_admin_groups() -> None:
    assert "admin" in RULES.scopes(ALICE)
    assert RULES.scopes(SignedIn("b", "b@example.com", True, groups=("staff",))) == {
        "read",
        "write",
        "offline_access",
    }


def test_github_orgs_and_users() -> None:
    rules = Admission(github_users=frozenset({"octocat"}), github_orgs=frozenset({"acme"}))
    assert rules.refusal(SignedIn("1", login="octocat")) is None
    assert rules.refusal(SignedIn("2", login="someone", groups=("acme",))) is None
    assert rules.refusal(SignedIn("3", login="someone", groups=("other",))) is not None


def test_github_person_from_the_api_answers() -> None:
    who = github_person(
        {"id": 583231, "login": "Octocat", "name": "The Octocat"},
        [
            {"email": "old@example.com", "primary": False, "verified": True},
            {"email": "octo@example.com", "primary": True, "verified": True},
        ],
        [{"login": "ACME"}, {"id": 3}],
    )
    assert who == SignedIn(
        "583231", "octo@example.com", True, "The Octocat", ("acme",), login="octocat"
    )
    unverified = github_person(
        {"id": 1, "login": "x"}, [{"email": "x@e.test", "primary": True, "verified": False}], []
    )
    assert unverified.email is None
    assert unverified.name == "x"
    with pytest.raises(ProviderError):
        github_person({"login": "no-id"}, [], [])


def test_groups_claim_shapes() -> None:
    assert claim_groups(["a", 1, "", "b"]) == ("a", "b")
    assert claim_groups("solo") == ("solo",)
    assert claim_groups({"a": 1}) == ()
    many = claim_groups([f"g{i}" for i in range(500)])
    assert len(many) == 500  # the rules see them all
    assert len(SignedIn("s", groups=many).person.groups) == 64  # tokens and headers: 64
    assert claim_groups(["x" * 257, "ok"]) == ("ok",)


def test_cookies() -> None:
    header = "theme=dark; __Host-mgw-session=abc.def; other=1"
    assert cookie_value(header, "__Host-mgw-session") == "abc.def"
    assert cookie_value(header, "missing") is None
    assert cookie_value(None, "x") is None
    made = set_cookie("__Host-mgw-session", "v", 60)
    assert made == "__Host-mgw-session=v; Path=/; Max-Age=60; Secure; HttpOnly; SameSite=Lax"
    assert strip_own_cookies(b"a=1; __Host-mgw-session=x; __Host-mgw-signin=y; b=2") == b"a=1; b=2"
    assert strip_own_cookies(b"__Host-mgw-session=x") == b""


def test_person_headers() -> None:
    person = Principal(
        "sub-1",
        "client",
        frozenset({"read"}),
        "jwt",
        email="a@example.com",
        name="Zoë\r\nX-Evil: 1",
        groups=("staff", "a,b", "100%"),
    )
    headers = dict(identity_headers(person))
    assert headers[b"x-auth-email"] == b"a@example.com"
    assert b"\r" not in headers[b"x-auth-name"]
    assert b"\n" not in headers[b"x-auth-name"]
    assert headers[b"x-auth-groups"] == b"staff,a%2Cb,100%25"
    assert groups_value(()) == b""
    operator = Principal("api-key", "api-key", frozenset({"read"}), "api_key")
    assert {name for name, _ in identity_headers(operator)} == {
        b"x-auth-subject",
        b"x-auth-client-id",
        b"x-auth-scopes",
    }


OIDC = {
    "MCP_OAUTH_CONSENT": "oidc",
    "MCP_OAUTH_ISSUER": "https://memory.example.com",
    "MCP_OIDC_ISSUER": "https://accounts.example.com/",
    "MCP_OIDC_CLIENT_ID": "cid",
    "MCP_OIDC_CLIENT_SECRET": "secret",
}


def test_oidc_settings() -> None:
    settings = Settings.from_env(
        {**OIDC, "MCP_OAUTH_ALLOWED_DOMAINS": "@Example.com, corp.test", "MCP_OIDC_SCOPES": ""}
    )
    assert settings.consent == "oidc"
    assert settings.oidc_issuer == "https://accounts.example.com"
    assert settings.oidc_scopes == "openid email profile"
    assert settings.oidc_groups_claim == "groups"
    assert settings.allowed_domains == ("example.com", "corp.test")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"MCP_OIDC_CLIENT_SECRET": ""}, "needs MCP_OIDC_CLIENT_SECRET"),
        ({"MCP_OIDC_ISSUER": "http://accounts.example.com"}, "must be an https URL"),
        ({"MCP_OIDC_SCOPES": "email profile"}, "must include openid"),
        ({"MCP_OAUTH_ISSUER": "http://localhost:8000"}, "needs an https issuer"),
        ({"MCP_OAUTH_CONSENT": "github"}, "needs MCP_GITHUB_CLIENT_ID"),
    ],
)
def test_bad_sign_in_settings_stop_start_up(change: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({**OIDC, **change})


def test_http_provider_allowed_on_loopback() -> None:
    settings = Settings.from_env({**OIDC, "MCP_OIDC_ISSUER": "http://127.0.0.1:9000"})
    assert settings.oidc_issuer == "http://127.0.0.1:9000"


def test_policy_people_ceilings(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "extends: default\n"
        "people:\n"
        "  - {groups: [contractors], scopes: read}\n"
        "  - {emails: [Auditor@Example.com], scopes: [read, offline_access]}\n"
    )
    policy = Policy.load(path)
    assert policy.match("GET", "/api/memories") is not None  # the default is kept
    rules = Admission(admin_groups=frozenset({"memory-admins"}), ceilings=policy.people)
    contractor = SignedIn("c", "c@example.com", True, groups=("contractors",))
    assert rules.scopes(contractor) == {"read"}
    auditor = SignedIn("a", "auditor@example.com", True)
    assert rules.scopes(auditor) == {"read", "offline_access"}
    assert rules.scopes(SignedIn("u", "auditor@example.com", False)) == {
        "read",
        "write",
        "offline_access",
    }  # an unverified address matches no email entry
    admin = SignedIn("x", groups=("contractors", "memory-admins"))
    assert rules.scopes(admin) == {"read", "admin"}


@pytest.mark.parametrize(
    ("people", "message"),
    [
        ("[{groups: [g], scopes: admin}]", "admin comes only from MCP_OAUTH_ADMIN_GROUPS"),
        ("[{scopes: read}]", "name some 'groups' or 'emails'"),
        ("[{groups: [g], scopes: read, extra: 1}]", "an entry has"),
        ("{groups: [g]}", "must be a list"),
    ],
)
def test_bad_people_entries(tmp_path: Path, people: str, message: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(f"people: {people}\n")
    with pytest.raises(PolicyError, match=message):
        Policy.load(path)


@pytest.mark.anyio
async def test_github_authorization_request() -> None:
    from urllib.parse import parse_qs, urlsplit

    from gateway.people.github import GithubProvider

    settings = Settings.from_env(
        {
            "MCP_OAUTH_CONSENT": "github",
            "MCP_OAUTH_ISSUER": "https://memory.example.com",
            "MCP_GITHUB_CLIENT_ID": "Ov23li",
            "MCP_GITHUB_CLIENT_SECRET": "s",
            "MCP_OAUTH_ALLOWED_GITHUB_ORGS": "ACME",
        }
    )
    assert settings.allowed_github_orgs == ("acme",)
    provider = GithubProvider(settings)
    url = await provider.authorization_url(
        state="st",
        nonce="unused",
        verifier="v" * 50,
        redirect_uri="https://memory.example.com/oauth/callback",
    )
    await provider.aclose()
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == (
        "https://github.com/login/oauth/authorize"
    )
    assert query["client_id"] == "Ov23li"
    assert query["state"] == "st"
    assert query["redirect_uri"] == "https://memory.example.com/oauth/callback"
    assert query["code_challenge_method"] == "S256"
    assert query["scope"] == "read:user user:email read:org"
    assert "nonce" not in query


def test_a_ceiling_does_not_reach_a_person_whose_groups_are_missing() -> None:
    """docs/people.md's warning: `people:` entries restrict only the groups they name,
    so a person whose provider leaves the groups out (Entra ID's group overage) gets the
    default scopes; admission by group refuses them instead."""
    ceiling = Ceiling(frozenset({"readers"}), frozenset(), frozenset({"read"}))
    reader = SignedIn("r1", "r@example.com", True, groups=("readers",))
    overage = SignedIn("r1", "r@example.com", True)  # same person, no groups claim
    rules = Admission(ceilings=(ceiling,))
    assert rules.scopes(reader) == {"read"}
    assert rules.scopes(overage) == {"read", "write", "offline_access"}
    by_group = Admission(groups=frozenset({"readers", "writers"}), ceilings=(ceiling,))
    assert by_group.refusal(reader) is None
    assert by_group.refusal(overage) is not None
