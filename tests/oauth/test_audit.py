"""Audit lines: every OAuth decision is logged on `gateway.oauth`, and no secret ever is."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from starlette.requests import Request

from gateway.errors import InvalidClient
from gateway.oauth.authorize_http import unredirectable
from tests.oauth.conftest import Harness

pytestmark = pytest.mark.anyio


async def test_oauth_decisions_are_logged_without_secrets(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.oauth")
    client = await harness.public_client(scope="read write offline_access")
    confidential = await harness.register(client_name="Robot", scope="read")
    code, verifier = await harness.code_for(client["client_id"], scope="read offline_access")
    tokens = (await harness.exchange(client["client_id"], code, verifier)).json()
    replay = await harness.exchange(client["client_id"], code, verifier)
    assert replay.status_code == 400

    lines = [r.getMessage() for r in caplog.records if r.name.startswith("gateway.oauth")]
    text = "\n".join(lines)
    assert f"oauth client registered: {client['client_id']}" in text
    assert f"oauth authorization granted: client={client['client_id']}" in text
    assert f"oauth token issued: grant=authorization_code client={client['client_id']}" in text
    assert "oauth authorization code replayed" in text
    assert "refused: 400 invalid_grant" in text
    secrets = [
        code,
        verifier,
        tokens["access_token"],
        tokens["refresh_token"],
        client["registration_access_token"],
        confidential["client_secret"],
    ]
    for secret in secrets:
        assert secret not in text
    assert all("oauth" in line.lower() for line in lines)


def test_a1_refused_client_is_logged_with_the_status_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """invalid_client (a refused metadata-document client) is a 401 elsewhere, but at the
    authorization endpoint the answer is a 400 (A1), and the audit line says 400 too."""
    caplog.set_level(logging.INFO, logger="gateway.oauth")
    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/oauth/authorize"}
    for accept in (b"application/json", b"text/html"):
        scope["headers"] = [(b"accept", accept)]
        response = unredirectable(Request(scope), InvalidClient("HTTP 404 for the document"))
        assert response.status_code == 400
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "gateway.oauth")
    assert text.count("refused: 400 invalid_client") == 2
    assert "refused: 401" not in text
