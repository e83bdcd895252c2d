"""Helpers shared by the end-to-end tests: raw OAuth steps and the Node.js runner."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.clients.consent import redirect_params
from tests.integration.live import LiveGateway

CLIENTS_DIR = Path(__file__).resolve().parents[1] / "clients"
LOOPBACK_REDIRECT = "http://127.0.0.1:33418/callback"


def http_client(gateway: LiveGateway) -> httpx.Client:
    return httpx.Client(base_url=gateway.url, verify=gateway.verify, timeout=15)


def register(
    http: httpx.Client, redirect_uri: str = LOOPBACK_REDIRECT, scope: str = "read write"
) -> str:
    """A public client (RFC 7591, auth method `none`); returns its client_id."""
    answer = http.post(
        "/oauth/register",
        json={
            "client_name": "e2e raw client",
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            "scope": scope,
        },
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["client_id"])


@dataclass(frozen=True)
class Pkce:
    verifier: str
    challenge: str

    @classmethod
    def new(cls) -> Pkce:
        verifier = secrets.token_urlsafe(48)
        digest = hashlib.sha256(verifier.encode()).digest()
        return cls(verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode())


def authorize_params(
    client_id: str, pkce: Pkce, redirect_uri: str = LOOPBACK_REDIRECT, **extra: str
) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "state": secrets.token_urlsafe(16),
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
        **extra,
    }


def authorize(http: httpx.Client, params: dict[str, str]) -> dict[str, str]:
    """GET /oauth/authorize (auto consent); the redirect's query parameters."""
    answer = http.get("/oauth/authorize", params=params)
    assert answer.status_code == 302, f"{answer.status_code} {answer.text}"
    location = answer.headers["location"]
    assert location.startswith(params["redirect_uri"] + "?"), location
    return redirect_params(location)


def code_grant(
    http: httpx.Client,
    client_id: str,
    pkce: Pkce,
    code: str,
    redirect_uri: str = LOOPBACK_REDIRECT,
    **extra: str,
) -> httpx.Response:
    return http.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "code_verifier": pkce.verifier,
            **extra,
        },
    )


def token_for(
    http: httpx.Client, scope: str = "read write", **extra: str
) -> tuple[str, dict[str, Any]]:
    """(client_id, token response body) from a full code grant by a fresh public client."""
    client_id = register(http, scope="read write offline_access")
    pkce = Pkce.new()
    code = authorize(http, authorize_params(client_id, pkce, scope=scope, **extra))["code"]
    answer = code_grant(http, client_id, pkce, code, **extra)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return client_id, body


def jwt_claims(token: str) -> dict[str, Any]:
    """The unverified payload of a JWT (the gateway's signature is checked elsewhere)."""
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * -len(payload)))
    return decoded


@dataclass(frozen=True)
class NodeClients:
    """Node.js and the npm packages committed under tests/clients (installed by `npm ci`)."""

    node: str
    directory: Path

    def run(
        self, script: str, args: list[str], gateway: LiveGateway, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.node, str(self.directory / script), *args],
            cwd=self.directory,
            env={**os.environ, "NODE_EXTRA_CA_CERTS": str(gateway.ca)},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def bin(self, name: str) -> Path:
        return self.directory / "node_modules" / ".bin" / name

    def modern_node(self) -> str:
        """Node.js 22 from the `node` dev dependency (the conformance suite needs it);
        the system node when that is recent enough or the package is absent."""
        packaged = self.bin("node")
        return str(packaged) if packaged.exists() else self.node


def find_node_clients() -> NodeClients:
    node = shutil.which("node")
    packages = CLIENTS_DIR / "node_modules" / "@modelcontextprotocol"
    installed = (packages / "sdk").is_dir() and (packages / "conformance").is_dir()
    if node and installed:
        return NodeClients(node, CLIENTS_DIR)
    problem = (
        "node is not on PATH"
        if not node
        else "tests/clients/node_modules is missing (run `npm ci` in tests/clients)"
    )
    if os.environ.get("REQUIRE_NODE") == "1":
        pytest.fail(f"REQUIRE_NODE=1 but {problem}")
    pytest.skip(problem)


def last_json_line(output: str) -> dict[str, Any]:
    """The client scripts print one JSON summary as their last line."""
    lines = [line for line in output.splitlines() if line.startswith("{")]
    assert lines, f"no JSON summary in output:\n{output}"
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary


def seed_memory(gateway: LiveGateway, content: str) -> str:
    """Store a memory straight in the backend (test set-up); returns its content_hash."""
    answer = httpx.post(f"{gateway.backend_url}/api/memories", json={"content": content})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["content_hash"])
