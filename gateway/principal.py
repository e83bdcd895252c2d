"""Who a request acts for, once its credential has been checked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CredentialKind = Literal["jwt", "api_key", "session"]


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    client_id: str
    scopes: frozenset[str]
    kind: CredentialKind
    token_id: str | None = None
    # A person signed in through an identity provider (MCP_OAUTH_CONSENT=oidc|github).
    email: str | None = None
    name: str | None = None
    groups: tuple[str, ...] = ()

    @property
    def scope(self) -> str:
        return " ".join(sorted(self.scopes))
