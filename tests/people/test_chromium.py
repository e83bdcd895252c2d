"""Headless Chromium (Debian package `chromium`) through sign-in at oidc-provider and
the gateway's consent page, then the connected-apps page; the screenshots are
docs/people-consent.png and docs/people-apps.png."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.clients.consent import redirect_params
from tests.e2e.support import LOOPBACK_REDIRECT, Pkce, register
from tests.people.support import PROVIDER_DIR, PeopleStack
from tests.people.test_sign_in import authorize_url, gateway_http

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
DOCS = Path(__file__).resolve().parents[2] / "docs"


def find_chromium() -> str:
    installed = (PROVIDER_DIR / "node_modules" / "playwright-core").is_dir()
    if shutil.which(CHROMIUM) and installed:
        return CHROMIUM
    problem = "chromium is not installed" if installed else "playwright-core is not installed"
    if os.environ.get("REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"REQUIRE_CHROMIUM=1 but {problem}")
    pytest.skip(problem)


def test_chromium_signs_in_and_approves(people: PeopleStack, tmp_path: Path) -> None:
    chromium = find_chromium()
    with gateway_http(people) as http:
        client_id = register(http)
    url = authorize_url(people, client_id, Pkce.new(), scope="read write")
    shot, apps_shot = tmp_path / "consent.png", tmp_path / "apps.png"
    assert people.provider.node
    done = subprocess.run(
        [
            people.provider.node,
            "browser.mjs",
            url,
            LOOPBACK_REDIRECT,
            "alice",
            str(shot),
            str(apps_shot),
        ],
        cwd=PROVIDER_DIR,
        env={**os.environ, "CHROMIUM": chromium},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    params = redirect_params(summary["received"])
    assert params["iss"] == people.gateway.url
    assert "code" in params
    assert "alice@example.com" in summary["consent"]
    assert "e2e raw client" in summary["consent"]
    session = [c for c in summary["cookies"] if c["name"] == "__Host-mgw-session"]
    assert session == [
        {"name": "__Host-mgw-session", "secure": True, "httpOnly": True, "sameSite": "Lax",
         "path": "/"}
    ]  # fmt: skip
    assert client_id in summary["apps"]
    assert "Signed in as alice@example.com" in summary["apps"]
    assert shot.stat().st_size > 10_000
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(shot, DOCS / "people-consent.png")
        shutil.copyfile(apps_shot, DOCS / "people-apps.png")
