"""Two gateway processes sharing one Redis and one ES256 key act as one server.

One backend, replicas A and B started with `python -m gateway serve`, the same
MCP_OAUTH_STORAGE (Redis), the same state directory (the signing key in <state>/keys,
made once with `memory-gateway keys list`) and the same issuer. B is reached by its own
port: the issuer is a configured string, not the Host header.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.integration.live import live_backend, running
from tests.ports import bound_socket, port_of
from tests.store.redis_server import unique_prefix

pytestmark = pytest.mark.redis

CALLBACK = "http://127.0.0.1:3000/callback"
GRACE_SECONDS = 1
# The revocation cache reloads every 2 s; allow one reload plus scheduling slack.
PROPAGATION_SECONDS = 5


@dataclass(frozen=True)
class Replicas:
    issuer: str
    a: httpx.Client
    b: httpx.Client


@pytest.fixture(scope="module")
def replicas(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    root = tmp_path_factory.mktemp("replicas")
    state = root / "state"
    listeners = [bound_socket(), bound_socket()]  # handed to the replicas, never released
    issuer = f"http://localhost:{port_of(listeners[0])}"
    shared = {
        "MCP_HTTPS_ENABLED": "false",
        "MCP_HTTP_HOST": "127.0.0.1",
        "MCP_OAUTH_ISSUER": issuer,
        "MCP_GATEWAY_STATE_DIR": str(state),
        "MCP_OAUTH_STORAGE": f"{redis_url}?prefix={unique_prefix()}",
        "MCP_OAUTH_CONSENT": "auto",
        "MCP_OAUTH_REFRESH_GRACE_SECONDS": str(GRACE_SECONDS),
        "MCP_OAUTH_RATE_LIMIT_PER_MINUTE": "0",
    }
    _make_signing_key(shared)
    gateway = [sys.executable, "-m", "gateway", "serve"]
    with ExitStack() as stack:
        shared["MCP_GATEWAY_UPSTREAM"] = stack.enter_context(live_backend(root))
        clients = []
        for listener in listeners:
            port = port_of(listener)
            url = f"http://127.0.0.1:{port}"
            env = {**shared, "MCP_HTTP_PORT": str(port)}
            stack.enter_context(running(gateway, env, f"{url}/healthz", True, listener=listener))
            clients.append(stack.enter_context(httpx.Client(base_url=url, timeout=10)))
        yield Replicas(issuer, clients[0], clients[1])


def _make_signing_key(env: dict[str, str]) -> None:
    """`memory-gateway keys list` creates the ES256 key both replicas then read."""
    subprocess.run(
        [sys.executable, "-m", "gateway", "keys", "list"],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert list((Path(env["MCP_GATEWAY_STATE_DIR"]) / "keys").iterdir())


def register(replica: httpx.Client) -> str:
    response = replica.post(
        "/oauth/register",
        json={
            "client_name": "replica test",
            "redirect_uris": [CALLBACK],
            "token_endpoint_auth_method": "none",
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["client_id"])


def authorize(replica: httpx.Client, client_id: str, issuer: str) -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": CALLBACK,
        "scope": "read write offline_access",
        "state": "s",
        "code_challenge": challenge.rstrip(b"=").decode(),
        "code_challenge_method": "S256",
    }
    response = replica.get("/oauth/authorize", params=params)
    assert response.status_code == 302, response.text
    query = {k: v[0] for k, v in parse_qs(urlsplit(response.headers["location"]).query).items()}
    assert query["iss"] == issuer
    return query["code"], verifier


def exchange(replica: httpx.Client, client_id: str, code: str, verifier: str) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": client_id,
        "redirect_uri": CALLBACK,
        "code_verifier": verifier,
    }
    return replica.post("/oauth/token", data=form)


def refresh(replica: httpx.Client, client_id: str, token: str) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id}
    return replica.post("/oauth/token", data=form)


def tokens(replica: httpx.Client, client_id: str, code: str, verifier: str) -> dict[str, Any]:
    response = exchange(replica, client_id, code, verifier)
    assert response.status_code == 200, response.text
    return dict(response.json())


def memories(replica: httpx.Client, access_token: str) -> int:
    headers = {"Authorization": f"Bearer {access_token}"}
    return replica.get("/api/memories", headers=headers).status_code


def test_a1_client_registered_on_a_authorizes_on_b_and_codes_cross(replicas: Replicas) -> None:
    a, b = replicas.a, replicas.b
    client_id = register(a)
    code, verifier = authorize(b, client_id, replicas.issuer)
    assert tokens(a, client_id, code, verifier)["token_type"] == "Bearer"
    code, verifier = authorize(a, client_id, replicas.issuer)
    issued = tokens(b, client_id, code, verifier)
    assert set(issued["scope"].split()) == {"read", "write", "offline_access"}


def test_j1_access_token_from_a_works_on_b(replicas: Replicas) -> None:
    client_id = register(replicas.a)
    code, verifier = authorize(replicas.a, client_id, replicas.issuer)
    access = tokens(replicas.a, client_id, code, verifier)["access_token"]
    assert memories(replicas.b, access) == 200
    assert memories(replicas.a, access) == 200
    assert memories(replicas.b, access + "x") == 401


def test_t4_code_reused_on_the_other_replica_is_refused(replicas: Replicas) -> None:
    client_id = register(replicas.a)
    code, verifier = authorize(replicas.a, client_id, replicas.issuer)
    access = tokens(replicas.a, client_id, code, verifier)["access_token"]
    again = exchange(replicas.b, client_id, code, verifier)
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")
    assert _refused_on_both(replicas, access)


def test_t5_replay_after_grace_revokes_family_on_both_replicas(replicas: Replicas) -> None:
    a, b = replicas.a, replicas.b
    client_id = register(a)
    code, verifier = authorize(a, client_id, replicas.issuer)
    first = tokens(a, client_id, code, verifier)
    rotated = refresh(b, client_id, first["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()
    assert memories(a, second["access_token"]) == 200
    time.sleep(GRACE_SECONDS + 0.5)
    replay = refresh(a, client_id, first["refresh_token"])
    assert (replay.status_code, replay.json()["error"]) == (400, "invalid_grant")
    assert _refused_on_both(replicas, second["access_token"])
    assert memories(b, first["access_token"]) == 401
    assert refresh(b, client_id, second["refresh_token"]).status_code == 400


def test_t5_same_refresh_on_both_replicas_within_grace_gets_one_successor(
    replicas: Replicas,
) -> None:
    client_id = register(replicas.a)
    code, verifier = authorize(replicas.a, client_id, replicas.issuer)
    presented = tokens(replicas.a, client_id, code, verifier)["refresh_token"]
    replies = _concurrently(lambda r: refresh(r, client_id, presented), replicas)
    assert [r.status_code for r in replies] == [200, 200], [r.text for r in replies]
    successors = {r.json()["refresh_token"] for r in replies}
    assert len(successors) == 1
    assert refresh(replicas.b, client_id, successors.pop()).status_code == 200


def test_a7_one_code_exchanged_concurrently_on_a_and_b_yields_one_token(
    replicas: Replicas,
) -> None:
    client_id = register(replicas.a)
    for _ in range(3):
        code, verifier = authorize(replicas.b, client_id, replicas.issuer)
        replies = _concurrently(
            lambda r, c=code, v=verifier: exchange(r, client_id, c, v), replicas
        )
        # One wins; or, when the loser's replay revoked the grant before the winner stored
        # its refresh token, neither does (T4: nothing of a replayed code survives).
        assert sorted(r.status_code for r in replies) in ([200, 400], [400, 400])
        for loser in (r for r in replies if r.status_code == 400):
            assert loser.json()["error"] == "invalid_grant"


def _concurrently(call: Any, replicas: Replicas) -> list[httpx.Response]:
    start = threading.Barrier(2)

    def run(replica: httpx.Client) -> httpx.Response:
        start.wait(timeout=10)
        response: httpx.Response = call(replica)
        return response

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(run, [replicas.a, replicas.b]))


def _refused_on_both(replicas: Replicas, access_token: str) -> bool:
    """Both replicas answer 401 within the revocation cache's reload period."""
    deadline = time.monotonic() + PROPAGATION_SECONDS
    while time.monotonic() < deadline:
        if memories(replicas.a, access_token) == 401 and memories(replicas.b, access_token) == 401:
            return True
        time.sleep(0.2)
    return False
