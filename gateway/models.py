"""Records the authorization server keeps: clients, codes, refresh tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

AuthMethod = Literal["client_secret_basic", "client_secret_post", "none"]
ClientSource = Literal["dcr", "cimd", "static"]
SUPPORTED_SCOPES = ("read", "write", "admin", "offline_access")
RESOURCE_SCOPES = ("read", "write", "admin")


@dataclass(frozen=True)
class Client:
    """A registered client (RFC 7591) or one described by a metadata document (CIMD).

    `metadata` holds every other registered field to echo back (client_uri, logo_uri,
    contacts, software_id ...). Secrets and registration tokens are stored hashed.
    `trusted` marks a client registered with an operator credential (the initial access
    token or the API key): only such clients may use `client_credentials`, a grant
    without a user and hence without consent, hold `admin` and introspect tokens.
    """

    client_id: str
    redirect_uris: tuple[str, ...]
    token_endpoint_auth_method: AuthMethod
    grant_types: tuple[str, ...] = ("authorization_code", "refresh_token")
    response_types: tuple[str, ...] = ("code",)
    scope: str = "read write"
    client_name: str | None = None
    client_secret_hash: str | None = None
    client_secret_expires_at: int = 0
    client_id_issued_at: int = 0
    registration_token_hash: str | None = None
    source: ClientSource = "dcr"
    trusted: bool = False
    metadata: dict[str, object] = field(default_factory=dict)

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset(self.scope.split())
