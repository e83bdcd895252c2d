"""The seed document's promises, against real processes: its curl script, and
MCP_OAUTH_ENABLED=false leaving API-key authentication only."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.live import LiveGateway, live_stack

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "test_oauth_flow.sh"
API_KEY = "seed-compat-api-key-0123456789"


def run_script(gateway: LiveGateway, **env: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("curl") is None or shutil.which("openssl") is None:
        pytest.skip("curl and openssl are needed for the curl walk-through")
    return subprocess.run(
        ["bash", str(SCRIPT), gateway.url],
        env={**os.environ, "CACERT": str(gateway.ca), **env},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_curl_script_walks_the_flow_with_auto_consent(live_gateway: LiveGateway) -> None:
    done = run_script(live_gateway)
    assert done.returncode == 0, done.stderr
    assert "OAuth flow passed" in done.stdout
    assert "ok  revocation: revoked token refused" in done.stdout


def test_curl_script_approves_the_consent_page_with_the_api_key(
    live_gateway_consent: LiveGateway,
) -> None:
    gateway = live_gateway_consent
    assert gateway.api_key is not None
    refused = run_script(gateway)
    assert refused.returncode != 0
    assert "consent needed" in refused.stderr
    done = run_script(gateway, API_KEY=gateway.api_key)
    assert done.returncode == 0, done.stderr
    assert "OAuth flow passed" in done.stdout


@pytest.fixture(scope="module")
def oauth_off(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    env = {"MCP_OAUTH_ENABLED": "false", "MCP_API_KEY": API_KEY}
    with live_stack(tmp_path_factory.mktemp("oauth-off"), env) as gateway:
        yield gateway


@pytest.mark.parametrize(
    "path",
    [
        "/.well-known/oauth-authorization-server/mcp",
        "/.well-known/openid-configuration/mcp",
        "/oauth/register",
        "/oauth/token",
    ],
)
def test_oauth_disabled_endpoints_answer_404(oauth_off: LiveGateway, path: str) -> None:
    answer = httpx.get(f"{oauth_off.url}{path}", verify=oauth_off.verify)
    assert answer.status_code == 404
    assert "MCP_OAUTH_ENABLED=false" in answer.json()["error_description"]


def test_oauth_disabled_keeps_api_key_authentication(oauth_off: LiveGateway) -> None:
    url = f"{oauth_off.url}/api/memories"
    assert httpx.get(url, verify=oauth_off.verify).status_code == 401
    bearer = {"Authorization": f"Bearer {API_KEY}"}
    assert httpx.get(url, headers=bearer, verify=oauth_off.verify).status_code == 200
    keyed = {"X-API-Key": API_KEY}
    stored = httpx.post(
        url, headers=keyed, json={"content": "seed compat"}, verify=oauth_off.verify
    )
    assert stored.status_code == 200
