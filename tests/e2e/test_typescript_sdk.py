"""The official MCP TypeScript SDK (the client library Claude Code builds on) on Node.js,
against the live gateway: tests/clients/mcp_client.mjs, run with NODE_EXTRA_CA_CERTS set
to the development CA. Skipped without node or `npm ci` in tests/clients, unless
REQUIRE_NODE=1.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e.conftest import API_KEY
from tests.e2e.support import (
    NodeClients,
    last_json_line,
    seed_memory,
)
from tests.integration.live import LiveGateway

pytestmark = pytest.mark.node


def run_client(node: NodeClients, gateway: LiveGateway, *args: str) -> dict[str, Any]:
    done = node.run("mcp_client.mjs", [f"{gateway.url}/mcp", *args], gateway)
    summary = last_json_line(done.stdout)
    assert done.returncode == 0, f"{summary.get('error')}\n{done.stderr[-2000:]}"
    return summary


def check_read_flow(summary: dict[str, Any], gateway: LiveGateway) -> None:
    assert summary["sdk"].startswith("1.")
    assert summary["server"] == "memory-backend"
    assert summary["clientId"]
    assert {"store_memory", "retrieve_memory"} <= set(summary["tools"])
    assert summary["retrieved"] is True
    (request,) = summary["authorizeRequests"]
    query = parse_qs(urlsplit(request).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["resource"] == [f"{gateway.url}/mcp"]
    (redirect,) = summary["redirects"]
    assert redirect["iss"] == gateway.url
    assert redirect["code"] == "present"


def test_typescript_sdk_auto_consent_initialize_tools_retrieve(
    node: NodeClients, gateway: LiveGateway
) -> None:
    """D5 -> D4 -> R1 -> A3 -> T3 with the TypeScript SDK: discovery, DCR, PKCE,
    token, initialize, tools/list and retrieve_memory through the gateway."""
    content = f"typescript sdk e2e {secrets.token_hex(6)}"
    seed_memory(gateway, content)
    check_read_flow(run_client(node, gateway, "--content", content), gateway)


def test_a6_typescript_sdk_consent_form_approved_with_api_key(
    node: NodeClients, consent_gateway: LiveGateway
) -> None:
    """A6: the consent form, approved with the operator's API key, lets the SDK in."""
    content = f"typescript sdk consent {secrets.token_hex(6)}"
    seed_memory(consent_gateway, content)
    summary = run_client(node, consent_gateway, "--content", content, "--api-key", API_KEY)
    check_read_flow(summary, consent_gateway)


def test_d6_typescript_sdk_steps_up_to_write_for_store_memory(
    node: NodeClients, gateway: LiveGateway
) -> None:
    """D6: connected with `read`, store_memory gets 403 insufficient_scope; the SDK
    re-authorises for the challenged scopes and the call, then retrieve, succeed."""
    summary = run_client(node, gateway, "--store")
    assert summary["stored"]["success"] is True
    assert summary["retrieved"] is True
    first, second = summary["authorizeRequests"]
    assert parse_qs(urlsplit(first).query)["scope"] == ["read"]
    assert {"read", "write"} <= set(parse_qs(urlsplit(second).query)["scope"][0].split())
    assert "write" in summary["finalScope"].split()
