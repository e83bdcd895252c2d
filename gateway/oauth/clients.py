"""Which client a `client_id` names: a registration in the store, or a Client ID
Metadata Document fetched from the URL it is (when CIMD is on)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.models import Client
from gateway.store.base import ClientStore


class ClientResolver(Protocol):
    """Resolves a `client_id` that is an https URL (Client ID Metadata Document)."""

    async def resolve(self, client_id: str) -> Client: ...


@dataclass(frozen=True)
class ClientFinder:
    """A registered client, or one described by its metadata document URL; None for
    no one. `resolver` is None when CIMD is off."""

    store: ClientStore
    resolver: ClientResolver | None = None

    async def __call__(self, client_id: str) -> Client | None:
        if self.resolver is not None and client_id.startswith("https://"):
            return await self.resolver.resolve(client_id)
        client = await self.store.get_client(client_id)
        if client is not None and client.source == "cimd":
            # A document stored while CIMD was on (gateway.oauth.client_metadata) is a
            # cache of the resolver's, not a registration: with CIMD off it is no one.
            return None
        return client
