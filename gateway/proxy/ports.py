"""What the proxy needs from authentication and policy, as structural types.

The real classes live in gateway.auth and gateway.policy; tests may pass any object
with these methods.
"""

from __future__ import annotations

from typing import Protocol

from gateway.errors import OAuthError
from gateway.principal import Principal

Header = tuple[bytes, bytes]


class Reply(Protocol):
    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> list[Header]: ...
    @property
    def body(self) -> bytes: ...


class Decision(Protocol):
    @property
    def public(self) -> bool: ...
    @property
    def scopes(self) -> frozenset[str]: ...
    @property
    def inspect_jsonrpc(self) -> bool: ...
    @property
    def browser(self) -> bool: ...


class Authenticator(Protocol):
    def authenticate(
        self, authorization: bytes | None, api_key_header: bytes | None, *, query: bytes = b""
    ) -> Principal | None: ...


class Challenges(Protocol):
    def unauthorized(self, required: frozenset[str], error: OAuthError | None) -> Reply: ...
    def forbidden(self, required: frozenset[str]) -> Reply: ...
    def denied(self) -> Reply: ...


class SessionAuth(Protocol):
    """Signed-in people's browser sessions (gateway.people.session.Sessions)."""

    def for_request(
        self, cookie_header: bytes | None, method: str, origin: bytes | None
    ) -> Principal | None: ...


class Policy(Protocol):
    def match(self, method: str, path: str) -> Decision | None: ...
    def jsonrpc_scopes(self, body: bytes, base: frozenset[str]) -> frozenset[str]: ...
