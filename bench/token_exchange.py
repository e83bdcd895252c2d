"""Authorization-code exchanges per second at the token endpoint (target: 500/s or more,
docs/performance.md).

Prepares N codes directly in a fresh SQLite store, serves the authorization server
(ES256 keys, SQLite, rate limits off) with uvicorn on 127.0.0.1 in a child process, then
times N exchanges over keep-alive connections. A benchmark, never part of the tests.

    uv run python bench/token_exchange.py [--codes 2000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import multiprocessing
import secrets
import socket
import tempfile
import time
from pathlib import Path

import httpx

from gateway.authserver import build_authorization_server
from gateway.models import Client
from gateway.oauth.keys import load_or_create
from gateway.oauth.tokens import TokenService
from gateway.settings import Settings
from gateway.store.base import AuthorizationCode, hash_secret
from gateway.store.sqlite import SqliteStore
from tests.ports import reserved_port

CLIENT_ID = "bench-client"
REDIRECT = "http://127.0.0.1:9/cb"


def settings_for(state: Path, port: int) -> Settings:
    return Settings(
        issuer=f"http://127.0.0.1:{port}",
        state_dir=state,
        storage=f"sqlite:///{state / 'oauth.db'}",
        consent="auto",
        cimd_enabled=False,
        rate_limit_per_minute=0,
        port=port,
    )


def serve(state: Path, port: int) -> None:
    import uvicorn

    settings = settings_for(state, port)
    ring = load_or_create(state / "keys")
    tokens = TokenService(ring, issuer=settings.issuer, ttl=settings.access_token_ttl)
    server = build_authorization_server(settings, tokens=tokens)

    async def lifespan_app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await server.startup()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await server.shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await server.app(scope, receive, send)

    uvicorn.run(
        lifespan_app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        loop="uvloop",
        http="httptools",
        access_log=False,
    )


def challenge(verifier: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )


async def prepare(state: Path, port: int, count: int) -> list[tuple[str, str]]:
    settings = settings_for(state, port)
    store = SqliteStore(state / "oauth.db")
    await store.open()
    await store.add_client(Client(CLIENT_ID, (REDIRECT,), "none", scope="read write"), limit=10)
    pairs = []
    for _ in range(count):
        code, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(48)
        await store.save_code(
            AuthorizationCode(
                code_hash=hash_secret(code),
                client_id=CLIENT_ID,
                redirect_uri=REDIRECT,
                redirect_uri_given=True,
                code_challenge=challenge(verifier),
                scope="read write",
                resource=settings.resource,
                subject="user",
                family=secrets.token_urlsafe(16),
                expires_at=time.time() + 3600,
            )
        )
        pairs.append((code, verifier))
    await store.close()
    return pairs


async def drive(port: int, pairs: list[tuple[str, str]], concurrency: int) -> float:
    queue = list(pairs)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as http:

        async def worker() -> None:
            while queue:
                code, verifier = queue.pop()
                response = await http.post(
                    "/oauth/token",
                    data={
                        "grant_type": "authorization_code",
                        "code": code,
                        "client_id": CLIENT_ID,
                        "redirect_uri": REDIRECT,
                        "code_verifier": verifier,
                    },
                )
                assert response.status_code == 200, response.text

        warm = [queue.pop() for _ in range(min(50, len(queue) // 10))]
        for code, verifier in warm:
            await http.post(
                "/oauth/token",
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "client_id": CLIENT_ID,
                    "redirect_uri": REDIRECT,
                    "code_verifier": verifier,
                },
            )
        measured = len(queue)
        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), 120)
        return measured / (time.perf_counter() - started)


def wait_for(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--codes", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        state, port = Path(tmp), reserved_port()
        load_or_create(state / "keys")
        pairs = asyncio.run(prepare(state, port, args.codes))
        child = multiprocessing.get_context("spawn").Process(target=serve, args=(state, port))
        child.start()
        try:
            wait_for(port)
            rate = asyncio.run(drive(port, pairs, args.concurrency))
        finally:
            child.terminate()
            child.join(10)
    print(
        f"authorization-code exchanges: {rate:,.0f}/s "
        f"(ES256, SQLite, {args.codes} codes, {args.concurrency} connections)"
    )


if __name__ == "__main__":
    main()
