"""The operator's CLI against a running gateway's state (SQLite and Redis): listings
(tables and --json), and revocations the running gateway honours within a second."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.ops.support import (
    REDIRECT,
    ROOT,
    Gateway,
    Tokens,
    authorize,
    oauth_flow,
    start_gateway,
)
from tests.proxy.conftest import Server, start_upstream
from tests.store.redis_server import redis_server, require_redis_server, unique_prefix


@pytest.fixture(scope="module")
def upstream() -> Iterator[Server]:
    server = start_upstream()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def gateway(request: pytest.FixtureRequest, tmp_path: Path, upstream: Server) -> Iterator[Gateway]:
    if request.param == "sqlite":
        gw = start_gateway(tmp_path, upstream.url, metrics=False)
        yield gw
        gw.stop()
        return
    with redis_server(require_redis_server(), tmp_path) as url:
        storage = f"{url}?prefix={unique_prefix()}"
        gw = start_gateway(tmp_path, upstream.url, {"MCP_OAUTH_STORAGE": storage}, metrics=False)
        yield gw
        gw.stop()


def cli(gateway: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=ROOT,
        env=gateway.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def status(gateway: Gateway, tokens: Tokens) -> int:
    headers = {"Authorization": f"Bearer {tokens.access_token}"}
    return httpx.get(f"{gateway.url}/api/memories", headers=headers, timeout=5).status_code


def refused_within(gateway: Gateway, tokens: Tokens, seconds: float) -> float:
    started = time.monotonic()
    while status(gateway, tokens) != 401:
        assert time.monotonic() - started < seconds, "the token still works"
        time.sleep(0.05)
    return time.monotonic() - started


def test_clients_list_show_and_revoke_stop_a_live_token(gateway: Gateway) -> None:
    tokens = oauth_flow(gateway.url)
    other = oauth_flow(gateway.url)
    assert status(gateway, tokens) == 200

    table = cli(gateway, "clients", "list")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split()[:3] == ["CLIENT_ID", "NAME", "SOURCE"]
    assert tokens.client_id in table.stdout
    listed = json.loads(cli(gateway, "clients", "list", "--json").stdout)
    assert {tokens.client_id, other.client_id} <= {row["client_id"] for row in listed}
    shown = json.loads(cli(gateway, "clients", "show", tokens.client_id).stdout)
    assert shown["client_id"] == tokens.client_id
    assert len(shown["grants"]) == 1
    assert tokens.refresh_token is not None
    assert tokens.refresh_token not in json.dumps(listed) + json.dumps(shown)

    revoked = cli(gateway, "clients", "revoke", tokens.client_id)
    assert revoked.returncode == 0, revoked.stderr
    assert refused_within(gateway, tokens, 1.0) < 1.0
    assert status(gateway, other) == 200  # only that client
    refreshed = httpx.post(
        f"{gateway.url}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens.refresh_token,
              "client_id": tokens.client_id},
    )  # fmt: skip
    assert refreshed.status_code == 400  # its grant went too
    with httpx.Client(base_url=gateway.url, timeout=10) as http:  # and it gets no new token
        resource = f"{gateway.url}/mcp"
        code, verifier = authorize(http, tokens.client_id, resource)
        refused = http.post("/oauth/token", data={
            "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
            "client_id": tokens.client_id, "redirect_uri": REDIRECT, "resource": resource,
        })  # fmt: skip
    assert refused.status_code == 400
    assert refused.json()["error"] == "unauthorized_client"

    deleted = cli(gateway, "clients", "delete", other.client_id, "--json")
    assert json.loads(deleted.stdout)["client_id"] == other.client_id
    assert refused_within(gateway, other, 1.0) < 1.0
    assert cli(gateway, "clients", "show", other.client_id).returncode == 1


def test_grants_list_and_revoke_by_subject_client_and_id(gateway: Gateway) -> None:
    first, second, third = (oauth_flow(gateway.url) for _ in range(3))
    grants = json.loads(cli(gateway, "grants", "list", "--json").stdout)
    assert {g["client_id"] for g in grants} >= {first.client_id, second.client_id}
    mine = json.loads(cli(gateway, "grants", "list", "--client", first.client_id, "--json").stdout)
    assert [g["client_id"] for g in mine] == [first.client_id]
    table = cli(gateway, "grants", "list", "--client", first.client_id)
    assert mine[0]["grant"] in table.stdout

    done = cli(gateway, "grants", "revoke", mine[0]["grant"])
    assert done.returncode == 0, done.stderr
    assert refused_within(gateway, first, 1.0) < 1.0
    assert status(gateway, second) == 200

    by_client = cli(gateway, "grants", "revoke", "--client", second.client_id)
    assert by_client.returncode == 0, by_client.stderr
    assert refused_within(gateway, second, 1.0) < 1.0

    subject = json.loads(cli(gateway, "grants", "list", "--json").stdout)[0]["subject"]
    by_subject = cli(gateway, "grants", "revoke", "--subject", subject, "--json")
    assert json.loads(by_subject.stdout)["grants_revoked"]
    assert refused_within(gateway, third, 1.0) < 1.0
    assert json.loads(cli(gateway, "grants", "list", "--json").stdout) == []


def test_keys_list_as_table_and_json(gateway: Gateway) -> None:
    listed = cli(gateway, "keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    keys = json.loads(listed.stdout)
    assert [k["state"] for k in keys] == ["active"]
    jwks = httpx.get(f"{gateway.url}/oauth/jwks").json()
    assert keys[0]["kid"] == jwks["keys"][0]["kid"]
    assert "PRIVATE" not in listed.stdout


def test_unknown_client_and_nothing_to_revoke_are_clear_errors(gateway: Gateway) -> None:
    missing = cli(gateway, "clients", "revoke", "no-such-client")
    assert missing.returncode == 1
    assert "no client" in missing.stdout
    nothing = cli(gateway, "grants", "revoke")
    assert nothing.returncode == 2
