"""`memory-gateway people`: an operator's view of people's connected apps.

    memory-gateway people apps [--subject SUB]      list grants (every person's by default)
    memory-gateway people revoke SUB CLIENT_ID      revoke one person's grant to one client

Works on the configured store (MCP_OAUTH_STORAGE or the state directory's SQLite), so a
running gateway sees a revocation at its next revocation refresh (every 2 s) and every
replica sharing the store does too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

from gateway.oauth.revocation import RevocationCache, Revoker
from gateway.people.flow import list_grants, revoke_grant
from gateway.settings import Settings
from gateway.store.factory import open_store


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    people = commands.add_parser("people", help="people's connected apps (operator)")
    actions = people.add_subparsers(dest="people_action", required=True)
    apps = actions.add_parser("apps", help="list connected apps (JSON lines)")
    apps.add_argument("--subject", help="only this person's (their provider subject)")
    revoke = actions.add_parser("revoke", help="revoke a person's grant to a client")
    revoke.add_argument("subject")
    revoke.add_argument("client_id")
    people.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env(os.environ)
    return asyncio.run(_run(settings, args))


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    store = open_store(settings.storage)
    await store.open()
    try:
        if args.people_action == "apps":
            for _, grant in await list_grants(store, args.subject):
                print(json.dumps({k: v for k, v in grant.items() if k != "families"}))
            return 0
        cache = RevocationCache(store, clock=time.time, max_staleness=60.0)
        revoker = Revoker(store, cache, access_ttl=settings.access_token_ttl)
        if await revoke_grant(store, revoker, args.subject, args.client_id):
            print(f"revoked: {args.subject} -> {args.client_id}")
            return 0
        print(f"no grant of {args.subject} to {args.client_id}")
        return 1
    finally:
        await store.close()
