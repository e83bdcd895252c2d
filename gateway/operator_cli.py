"""The operator's commands: `clients`, `grants` and `keys list`, against the gateway's
own state (SQLite or Redis, from MCP_OAUTH_STORAGE / MCP_GATEWAY_STATE_DIR as the
gateway reads them).

Revocations are written to the store exactly as the gateway's own revocation endpoint
writes them, so running gateways (every replica, every worker) honour them after their
next revocation reload, within `REVOCATION_REFRESH_SECONDS` (0.5 s).

- `clients revoke ID`: every token the client holds stops working (its refresh tokens
  are deleted, its access tokens revoked), and the token endpoint refuses it new ones
  for the next access-token lifetime. The registration stays.
- `clients delete ID`: the same, and the registration is deleted (RFC 7592 DELETE).
- `grants revoke FAMILY... | --client ID | --subject SUB`: the refresh-token families and
  every access token issued from them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.oauth.revocation import RevocationCache, Revoker
from gateway.settings import Settings
from gateway.store.base import ClientEntry, Grant, InventoryStore, Store
from gateway.store.factory import open_store

LIST_LIMIT = 10_000


class _OperatorStore(Store, InventoryStore, Protocol):
    pass


def add_commands(commands: Any) -> None:
    """The `clients` and `grants` subcommands (`keys` is in gateway.__main__)."""
    clients = commands.add_parser("clients", help="list, show, revoke or delete OAuth clients")
    client_actions = clients.add_subparsers(dest="action", required=True)
    listing = client_actions.add_parser("list", help="every registered client")
    _common(listing)
    for name, text in (
        ("show", "one client's registration and its grants"),
        ("revoke", "revoke every token the client holds (the registration stays)"),
        ("delete", "revoke every token and delete the registration"),
    ):
        action = client_actions.add_parser(name, help=text)
        action.add_argument("client_id")
        _common(action)
    clients.set_defaults(handler=_clients)

    grants = commands.add_parser("grants", help="list or revoke grants (refresh-token families)")
    grant_actions = grants.add_subparsers(dest="action", required=True)
    listing = grant_actions.add_parser("list", help="live grants")
    listing.add_argument("--client", help="only this client's")
    listing.add_argument("--subject", help="only this subject's")
    _common(listing)
    revoke = grant_actions.add_parser("revoke", help="revoke grants and their access tokens")
    revoke.add_argument("family", nargs="*", help="grant ids (families) to revoke")
    revoke.add_argument("--client", help="every grant of this client")
    revoke.add_argument("--subject", help="every grant of this subject")
    _common(revoke)
    grants.set_defaults(handler=_grants)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--storage", help="overrides MCP_OAUTH_STORAGE")
    parser.add_argument("--state-dir", help="overrides MCP_GATEWAY_STATE_DIR")


def operator_settings(args: argparse.Namespace) -> Settings:
    flags = {"storage": args.storage, "state_dir": args.state_dir}
    env = dict(os.environ)
    # Only the state settings matter here; consent checks of the serving settings do not.
    env.setdefault("MCP_OAUTH_CONSENT", "auto")
    return Settings.from_env(env, flags)


def _clients(args: argparse.Namespace) -> int:
    return _run(args, _client_action)


def _grants(args: argparse.Namespace) -> int:
    return _run(args, _grant_action)


Action = Callable[[argparse.Namespace, _OperatorStore, Settings], Coroutine[Any, Any, int]]


def _run(args: argparse.Namespace, action: Action) -> int:
    settings = operator_settings(args)

    async def main() -> int:
        store: Any = open_store(settings.storage)
        await store.open()
        try:
            return await action(args, store, settings)
        finally:
            await store.close()

    return asyncio.run(main())


def _revoker(store: _OperatorStore, settings: Settings) -> Revoker:
    return Revoker(store, RevocationCache(store), access_ttl=settings.access_token_ttl)


async def _client_action(
    args: argparse.Namespace, store: _OperatorStore, settings: Settings
) -> int:
    now = time.time()
    if args.action == "list":
        entries = await store.list_clients(limit=LIST_LIMIT)
        rows = [_client_row(e) for e in entries]
        _print(args, rows, ["client_id", "name", "source", "trusted", "issued", "last_used"])
        return 0
    client = await store.get_client(args.client_id)
    if client is None:
        print(f"memory-gateway: no client {args.client_id!r}")
        return 1
    if args.action == "show":
        grants = await store.list_grants(now, client_id=client.client_id, subject=None,
                                         limit=LIST_LIMIT)  # fmt: skip
        document = asdict(client)
        for secret in ("client_secret_hash", "registration_token_hash"):
            document[secret] = "[set]" if document[secret] else None
        document["grants"] = [_grant_row(g) for g in grants]
        print(json.dumps(document, indent=2, default=str))
        return 0
    revoker = _revoker(store, settings)
    families = await store.list_grants(now, client_id=client.client_id, subject=None,
                                       limit=LIST_LIMIT)  # fmt: skip
    for grant in families:
        await revoker.revoke_family(grant.family)
    await revoker.revoke_client(client.client_id)
    if args.action == "delete":
        await store.delete_client(client.client_id)
        done = "deleted; its tokens are revoked"
    else:
        done = "revoked: every token it holds is refused from the next request"
    _report(args, {"client_id": client.client_id, "grants_revoked": len(families)},
            f"client {client.client_id} {done} ({len(families)} grants)")  # fmt: skip
    return 0


async def _grant_action(args: argparse.Namespace, store: _OperatorStore, settings: Settings) -> int:
    now = time.time()
    if args.action == "list":
        grants = await store.list_grants(now, client_id=args.client, subject=args.subject,
                                         limit=LIST_LIMIT)  # fmt: skip
        rows = [_grant_row(g) for g in grants]
        _print(args, rows, ["grant", "client_id", "subject", "scope", "issued", "expires"])
        return 0
    families = list(args.family)
    if args.client or args.subject:
        grants = await store.list_grants(now, client_id=args.client, subject=args.subject,
                                         limit=LIST_LIMIT)  # fmt: skip
        families += [g.family for g in grants]
    if not families and not (args.client or args.subject):
        print("memory-gateway: name grants to revoke, or --client / --subject")
        return 2
    revoker = _revoker(store, settings)
    for family in families:
        await revoker.revoke_family(family)
    _report(args, {"grants_revoked": families}, f"{len(families)} grants revoked")
    return 0


def _client_row(entry: ClientEntry) -> dict[str, Any]:
    client = entry.client
    return {
        "client_id": client.client_id,
        "name": client.client_name or "",
        "source": client.source,
        "trusted": client.trusted,
        "issued": _when(client.client_id_issued_at),
        "last_used": _when(entry.last_used),
    }


def _grant_row(grant: Grant) -> dict[str, Any]:
    return {
        "grant": grant.family,
        "client_id": grant.client_id,
        "subject": grant.subject,
        "scope": grant.scope,
        "issued": _when(grant.issued_at),
        "expires": _when(grant.expires_at),
    }


def _when(stamp: float | None) -> str:
    if not stamp:
        return ""
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _report(args: argparse.Namespace, document: dict[str, Any], text: str) -> None:
    print(json.dumps(document) if args.json else text)


def _print(args: argparse.Namespace, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print_table(rows, columns)


def print_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    if not rows:
        print("(none)")
