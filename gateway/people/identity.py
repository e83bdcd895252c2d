"""Who signed in, who may, and with which scopes: pure rules, no I/O.

Admission (MCP_OAUTH_ALLOWED_EMAILS / _DOMAINS / _GROUPS, and for GitHub _USERS / _ORGS):
any match admits; with no rule at all everyone the provider authenticates is admitted.
An email counts only when the provider says it is verified (`email_verified: true`),
unless MCP_OIDC_REQUIRE_EMAIL_VERIFIED=false lets an absent claim count. Scopes: everyone
admitted may hold `read write offline_access`; `admin` only members of
MCP_OAUTH_ADMIN_GROUPS. The policy file's `people:` entries lower the ceiling of the
groups and emails they name (docs/policy.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from gateway.auth import API_KEY_IDENTITY
from gateway.oauth.authorize import RESOURCE_OWNER
from gateway.oauth.tokens import MAX_CLAIM_CHARS, MAX_GROUPS, Person
from gateway.policy import Ceiling
from gateway.settings import Settings

PERSON_SCOPES = frozenset({"read", "write", "offline_access"})
# Groups the admission and scope rules look at (tokens and headers carry MAX_GROUPS):
# cutting the list short would drop the very group a `people:` ceiling restricts.
MAX_RULE_GROUPS = 1000
# The operator's own subjects (the api_key/auto consent grants, MCP_API_KEY): a provider
# naming a person so would be taken for the operator by the token endpoint and by the
# backend (X-Auth-Subject), so such a person is refused rather than renamed (renaming
# every subject would orphan existing people's grants).
OPERATOR_SUBJECTS = frozenset({RESOURCE_OWNER, API_KEY_IDENTITY})


@dataclass(frozen=True)
class SignedIn:
    """A person as the identity provider described them at sign-in."""

    subject: str
    email: str | None = None
    email_verified: bool | None = None
    name: str | None = None
    groups: tuple[str, ...] = ()
    login: str | None = None  # GitHub user name

    @property
    def person(self) -> Person:
        """What tokens, sessions and X-Auth-Groups carry: at most MAX_GROUPS groups."""
        return Person(email=self.email, name=self.name, groups=self.groups[:MAX_GROUPS])

    @property
    def label(self) -> str:
        return self.email or self.login or self.name or self.subject

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "email": self.email,
            "email_verified": self.email_verified,
            "name": self.name,
            "groups": list(self.groups),
            "login": self.login,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SignedIn:
        return cls(
            subject=str(data["subject"]),
            email=data.get("email"),
            email_verified=data.get("email_verified"),
            name=data.get("name"),
            groups=tuple(data.get("groups") or ()),
            login=data.get("login"),
        )


@dataclass(frozen=True)
class Admission:
    emails: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    github_users: frozenset[str] = frozenset()
    github_orgs: frozenset[str] = frozenset()
    admin_groups: frozenset[str] = frozenset()
    ceilings: tuple[Ceiling, ...] = ()
    # An email without `email_verified: true` counts only when this is False.
    require_verified: bool = True

    @classmethod
    def from_settings(cls, settings: Settings, ceilings: tuple[Ceiling, ...] = ()) -> Admission:
        return cls(
            ceilings=ceilings,
            require_verified=settings.oidc_require_email_verified,
            emails=frozenset(settings.allowed_emails),
            domains=frozenset(settings.allowed_domains),
            groups=frozenset(settings.allowed_groups),
            github_users=frozenset(settings.allowed_github_users),
            github_orgs=frozenset(settings.allowed_github_orgs),
            admin_groups=frozenset(settings.admin_groups),
        )

    @property
    def open(self) -> bool:
        """No rule set: everyone the provider authenticates is admitted."""
        return not (self.emails or self.domains or self.groups or self.github_users) and not (
            self.github_orgs
        )

    def refusal(self, who: SignedIn) -> str | None:
        """None when `who` is admitted; otherwise why not, in words for a page."""
        if who.subject in OPERATOR_SUBJECTS:
            return (
                f"the provider names this account {who.subject!r}, the gateway operator's "
                "own subject, which no person may hold"
            )
        if self.open:
            return None
        email = verified_email(who, self.require_verified)
        if email is not None and email in self.emails:
            return None
        if email is not None and email.rpartition("@")[2] in self.domains:
            return None
        if self.groups & set(who.groups):
            return None
        if who.login is not None and who.login.lower() in self.github_users:
            return None
        if self.github_orgs & {g.lower() for g in who.groups}:
            return None
        return _why(who, email)

    def person(self, who: SignedIn) -> Person:
        """What tokens, the session and the X-Auth-* headers say about `who`: the email
        only when it counts for admission too (an unverified one, such as Entra ID's
        editable `email`, would let the backend take one person for another)."""
        email = who.email if verified_email(who, self.require_verified) is not None else None
        return replace(who.person, email=email)

    def scopes(self, who: SignedIn) -> frozenset[str]:
        """The most this person may hold: the union of the policy's `people:` ceilings
        they match (PERSON_SCOPES when none does), and `admin` for the admin groups."""
        email = verified_email(who, self.require_verified)
        matched = [
            c.scopes
            for c in self.ceilings
            if c.groups & set(who.groups) or (email is not None and email in c.emails)
        ]
        scopes = frozenset().union(*matched) if matched else PERSON_SCOPES
        if self.admin_groups & set(who.groups):
            scopes = scopes | {"admin"}
        return scopes


def verified_email(who: SignedIn, require_verified: bool = True) -> str | None:
    """The address, lower-cased, when it may be trusted: `email_verified` true, or
    absent with `require_verified` off (MCP_OIDC_REQUIRE_EMAIL_VERIFIED=false)."""
    if not who.email or who.email_verified is False:
        return None
    if who.email_verified is None and require_verified:
        return None
    return ascii_lower(who.email)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """A-Z lower-cased, nothing else: str.lower() also folds other characters onto
    ASCII (KELVIN SIGN U+212A to 'k'), which would let a verified address that is
    not on the allow list compare equal to one that is."""
    return text.translate(_ASCII_LOWER)


def _why(who: SignedIn, email: str | None) -> str:
    if who.email and email is None:
        return f"the provider has not verified the address {who.email}"
    if email is None:
        return "the provider gave no email address, and no allowed group or user matches"
    return f"{email} is not among the allowed addresses, domains or groups"


def claim_text(value: object) -> str | None:
    """A string claim, bounded; anything else counts as absent."""
    if isinstance(value, str) and value:
        return value[:MAX_CLAIM_CHARS]
    return None


def claim_email(value: object) -> str | None:
    """An email claim, whole or not at all: cut short, `"x…@allowed.test"@evil.test`
    would read as an allowed.test address (no real address is this long: RFC 5321
    allows 254 characters)."""
    if isinstance(value, str) and value and len(value) <= MAX_CLAIM_CHARS:
        return value
    return None


def claim_groups(value: object) -> tuple[str, ...]:
    """A groups claim: a list of strings (or one string), bounded: at most
    MAX_RULE_GROUPS names, and a name longer than MAX_CLAIM_CHARS is left out (cut
    short it could equal another group's name)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return ()
    kept = (g for g in value if isinstance(g, str) and g and len(g) <= MAX_CLAIM_CHARS)
    return tuple(kept)[:MAX_RULE_GROUPS]
