"""Records and Protocols shared by every store implementation."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

from gateway.errors import GatewayError
from gateway.models import Client

RevocationKind = Literal["jti", "family", "client"]
RotationOutcome = Literal["rotated", "grace", "replayed", "unknown"]
# Used codes are kept this long after they expire, so a late replay is still recognised
# and still revokes what the code produced (PROTOCOL T4).
CODE_REPLAY_MEMORY = 3600
# Sealed refresh successors are dropped after the longest grace window settings allow.
MAX_GRACE_SECONDS = 300


class StoreUnavailable(GatewayError):
    """The store did not answer (connection lost, timed out, locked): try again later.
    Its message is for the log; clients get `STORE_UNAVAILABLE`'s."""

    error = "temporarily_unavailable"
    status_code = 503


def hash_secret(value: str) -> str:
    """SHA-256 of a 256-bit random secret: enough, since such secrets cannot be guessed."""
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class AuthorizationCode:
    code_hash: str
    client_id: str
    redirect_uri: str
    redirect_uri_given: bool
    code_challenge: str | None
    scope: str
    resource: str
    subject: str
    family: str
    expires_at: float


@dataclass(frozen=True)
class CodeRedemption:
    code: AuthorizationCode
    first_use: bool


@dataclass(frozen=True)
class RefreshToken:
    token_hash: str
    family: str
    client_id: str
    subject: str
    scope: str
    resource: str
    issued_at: float
    expires_at: float
    rotated_at: float | None = None
    successor_hash: str | None = None
    sealed_successor: bytes | None = None


@dataclass(frozen=True)
class RefreshRotation:
    outcome: RotationOutcome
    token: RefreshToken | None
    sealed_successor: bytes | None = None


@dataclass(frozen=True)
class Revocation:
    kind: RevocationKind
    value: str
    expires_at: float


@dataclass(frozen=True)
class PendingConsent:
    id_hash: str
    client_id: str
    redirect_uri: str
    redirect_uri_given: bool
    state: str | None
    code_challenge: str | None
    scope: str
    resource: str
    expires_at: float
    # The person who signed in (MCP_OAUTH_CONSENT=oidc|github); None: the operator.
    subject: str | None = None


class ClientStore(Protocol):
    async def add_client(self, client: Client, *, limit: int) -> bool:
        """Store a new client unless `limit` clients already exist; False when full."""
        ...

    async def get_client(self, client_id: str) -> Client | None: ...
    async def replace_client(self, client: Client) -> None: ...

    async def delete_client(self, client_id: str) -> bool:
        """Drop the client and its refresh tokens (RFC 7592 §2.3)."""
        ...

    async def mark_client_used(self, client_id: str, now: float) -> None:
        """Record that the client obtained a token now (kept unpruned, LRU order)."""
        ...

    async def client_was_used(self, client_id: str) -> bool:
        """Whether the client ever obtained a token (completed a flow)."""
        ...

    async def prune_unused_clients(self, issued_before: float) -> int:
        """Drop never-used clients issued before the cutoff, except trusted ones."""
        ...

    async def evict_client(self, *, unused_only: bool = False) -> str | None:
        """Delete the least recently used client that is not `trusted` (with its refresh
        tokens) and return its id; None when every client is trusted. `unused_only`:
        only a never-used one (the earliest registered), None when there is none."""
        ...


class CodeStore(Protocol):
    async def save_code(self, code: AuthorizationCode) -> None: ...

    async def redeem_code(self, code_hash: str) -> CodeRedemption | None:
        """Mark the code used, atomically; `first_use` is True for exactly one caller."""
        ...


class RefreshStore(Protocol):
    async def save_refresh(self, token: RefreshToken) -> bool:
        """Store a new token unless its family is revoked (checked atomically with the
        write, so a family revoked concurrently never gets a token); False then."""
        ...

    async def get_refresh(self, token_hash: str) -> RefreshToken | None: ...

    async def rotate_refresh(
        self, token_hash: str, successor: RefreshToken, sealed: bytes, *, now: float, grace: float
    ) -> RefreshRotation:
        """Replace an active token by `successor`, atomically.

        An already-rotated token presented within `grace` seconds of its rotation, while
        its successor is still active, yields "grace" and the sealed successor.
        """
        ...

    async def delete_family(self, family: str) -> None: ...


class RevocationStore(Protocol):
    async def add_revocation(self, revocation: Revocation) -> None: ...
    async def list_revocations(self, now: float) -> list[Revocation]: ...


class ConsentStore(Protocol):
    async def save_consent(self, pending: PendingConsent, *, limit: int) -> None:
        """Store a pending consent; past `limit` pending ones the soonest to expire go."""
        ...

    async def take_consent(self, id_hash: str, now: float) -> PendingConsent | None: ...


class CounterStore(Protocol):
    async def increment(self, key: str, expires_at: float) -> int: ...


# Most records `list_records` returns at once.
MAX_LISTED_RECORDS = 1000


class RecordStore(Protocol):
    """Small JSON records by (kind, key) with an expiry, for the people module
    (gateway.people): sign-ins in progress, people, their grants to clients."""

    async def put_record(
        self,
        kind: str,
        key: str,
        data: dict[str, Any],
        expires_at: float,
        *,
        limit: int | None = None,
    ) -> None:
        """Store (or replace) a record; past `limit` records of its kind the soonest
        to expire are dropped."""
        ...

    async def get_record(self, kind: str, key: str, now: float) -> dict[str, Any] | None: ...

    async def take_record(self, kind: str, key: str, now: float) -> dict[str, Any] | None:
        """Read and delete, atomically: exactly one caller gets a record (single use)."""
        ...

    async def delete_record(self, kind: str, key: str) -> bool: ...

    async def list_records(
        self, kind: str, prefix: str, now: float
    ) -> list[tuple[str, dict[str, Any]]]:
        """Unexpired records of `kind` whose key starts with `prefix` (at most
        MAX_LISTED_RECORDS), by key."""
        ...


class Store(
    ClientStore,
    CodeStore,
    RefreshStore,
    RevocationStore,
    ConsentStore,
    CounterStore,
    RecordStore,
    Protocol,
):
    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def prune(self, now: float) -> None:
        """Drop expired codes, tokens, revocations, consents and counters."""
        ...


def client_to_json(client: Client) -> dict[str, Any]:
    return asdict(client)


def client_from_json(data: dict[str, Any]) -> Client:
    for name in ("redirect_uris", "grant_types", "response_types"):
        data[name] = tuple(data[name])
    return Client(**data)


# Operator views (the `clients` and `grants` commands of the CLI)


@dataclass(frozen=True)
class ClientEntry:
    client: Client
    last_used: float | None


@dataclass(frozen=True)
class Grant:
    """A refresh-token family: one authorization a subject gave a client."""

    family: str
    client_id: str
    subject: str
    scope: str
    resource: str
    issued_at: float
    expires_at: float


class InventoryStore(Protocol):
    async def list_clients(self, *, limit: int) -> list[ClientEntry]:
        """Registered clients, oldest first, at most `limit`."""
        ...

    async def list_grants(
        self, now: float, *, client_id: str | None, subject: str | None, limit: int
    ) -> list[Grant]:
        """Live refresh-token families (optionally of one client or subject)."""
        ...
