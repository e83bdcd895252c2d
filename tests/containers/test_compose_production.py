"""compose.production.yaml over compose.yaml: the gateway configured for ACME.

Only the merged configuration is checked (`docker compose config`), then fed to the
gateway's own settings parser: a real ACME run needs a public name and port 80, which the
Pebble tests in tests/acme cover on loopback.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from gateway.settings import Settings
from tests.containers.conftest import ROOT

pytestmark = pytest.mark.docker

FILES = ["-f", str(ROOT / "compose.yaml"), "-f", str(ROOT / "compose.production.yaml")]


def _config(compose_cli: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_", "GATEWAY_"))}
    return subprocess.run(
        [*compose_cli, *FILES, "config", "--format", "json"],
        capture_output=True, text=True, timeout=60, env={**clean, **env}, cwd=ROOT,
    )  # fmt: skip


def test_production_profile_turns_on_acme(compose_cli: list[str]) -> None:
    env = {"MCP_ACME_DOMAINS": "memory.example.com", "MCP_API_KEY": "k" * 24}
    result = _config(compose_cli, env)
    assert result.returncode == 0, result.stderr
    gateway = json.loads(result.stdout)["services"]["gateway"]
    published = {(p["published"], p["target"]) for p in gateway["ports"]}
    assert published == {("443", 8443), ("80", 8080)}
    settings = Settings.from_env(gateway["environment"])
    assert settings.acme_domains == ("memory.example.com",)
    assert settings.cert_file is None
    assert settings.http_redirect_port == 8080
    assert settings.issuer == "https://memory.example.com"
    assert settings.acme_directory == "https://acme-v02.api.letsencrypt.org/directory"
    assert settings.hsts


def test_production_profile_names_what_is_missing(compose_cli: list[str]) -> None:
    result = _config(compose_cli, {"MCP_API_KEY": "k" * 24})
    assert result.returncode != 0
    assert "MCP_ACME_DOMAINS" in result.stderr
