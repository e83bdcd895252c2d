"""Walk the whole OAuth flow against a running gateway, as a client would.

Standalone:  uv run python tests/integration/test_oauth_flow.py https://localhost:8443
             (trusts certs/dev-ca.pem when it exists; --cacert PATH, --api-key KEY)
Under pytest it starts a backend and a gateway on loopback and runs the same walk.

discovery → registration → authorize (PKCE S256) → token → protected API call →
refresh → revocation.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html.parser
import secrets
import ssl
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from tests.integration.live import LiveGateway

import httpx
import pytest

REDIRECT_URI = "http://127.0.0.1:33418/callback"


@dataclass
class FlowResult:
    issuer: str
    client_id: str
    access_token: str
    refresh_token: str | None
    stored_hash: str
    steps: list[str] = field(default_factory=list)


class FlowError(AssertionError):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise FlowError(message)


def run_flow(base_url: str, *, verify: ssl.SSLContext | bool, api_key: str | None) -> FlowResult:
    with httpx.Client(base_url=base_url, verify=verify, timeout=10) as http:
        steps: list[str] = []
        meta = http.get("/.well-known/oauth-authorization-server/mcp")
        expect(meta.status_code == 200, f"discovery: {meta.status_code} {meta.text}")
        metadata = meta.json()
        issuer = metadata["issuer"]
        expect(not issuer.endswith("/"), f"issuer has a trailing slash: {issuer}")
        expect("S256" in metadata["code_challenge_methods_supported"], "no S256")
        steps.append(f"discovery: issuer {issuer}")

        challenge = http.get("/mcp")
        expect(challenge.status_code == 401, f"unauthenticated /mcp gave {challenge.status_code}")
        expect(
            "resource_metadata=" in challenge.headers.get("www-authenticate", ""),
            "401 without resource_metadata",
        )
        prm = http.get("/.well-known/oauth-protected-resource/mcp").json()
        expect(prm["authorization_servers"][0] == issuer, "PRM names another issuer")
        steps.append("protected resource metadata and 401 challenge")

        client = http.post(
            urlsplit(metadata["registration_endpoint"]).path,
            json={
                "client_name": "test_oauth_flow",
                "redirect_uris": [REDIRECT_URI],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
                "scope": "read write offline_access",
            },
        )
        expect(client.status_code == 201, f"registration: {client.status_code} {client.text}")
        client_id = client.json()["client_id"]
        steps.append(f"registration: {client_id}")

        verifier = secrets.token_urlsafe(48)
        digest = hashlib.sha256(verifier.encode()).digest()
        code_challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        state = secrets.token_urlsafe(16)
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT_URI,
            "scope": "read write offline_access",
            "state": state,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
            "resource": f"{issuer}/mcp",
        }
        authorize_path = urlsplit(metadata["authorization_endpoint"]).path
        answer = http.get(authorize_path, params=params)
        if answer.status_code == 200 and api_key:
            answer = _approve_consent(http, authorize_path, answer.text, api_key)
        expect(answer.status_code in (302, 303), f"authorize: {answer.status_code} {answer.text}")
        location = answer.headers["location"]
        expect(location.startswith(REDIRECT_URI), f"redirected elsewhere: {location}")
        query = parse_qs(urlsplit(location).query)
        expect(query.get("state") == [state], "state not returned")
        expect(query.get("iss") == [issuer], "iss not returned (RFC 9207)")
        code = query["code"][0]
        steps.append("authorize: code issued")

        token_path = urlsplit(metadata["token_endpoint"]).path
        tokens = http.post(
            token_path,
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT_URI,
                "client_id": client_id,
                "code_verifier": verifier,
                "resource": f"{issuer}/mcp",
            },
        )
        expect(tokens.status_code == 200, f"token: {tokens.status_code} {tokens.text}")
        expect(tokens.headers.get("cache-control") == "no-store", "token without no-store")
        body = tokens.json()
        expect(body["token_type"] == "Bearer" and body["expires_in"] > 0, f"token: {body}")
        access = body["access_token"]
        refresh = body.get("refresh_token")
        steps.append(f"token: scope {body['scope']!r}, refresh {'yes' if refresh else 'no'}")

        auth = {"Authorization": f"Bearer {access}"}
        stored = http.post(
            "/api/memories",
            headers=auth,
            json={"content": f"oauth flow {secrets.token_hex(4)}", "tags": ["flow"]},
        )
        expect(stored.status_code == 200, f"store: {stored.status_code} {stored.text}")
        stored_hash = stored.json()["content_hash"]
        listed = http.get("/api/memories", headers=auth, params={"tag": "flow"})
        expect(listed.status_code == 200, f"list: {listed.status_code} {listed.text}")
        steps.append("protected API: stored and listed a memory")

        if refresh:
            renewed = http.post(
                token_path,
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": refresh,
                    "client_id": client_id,
                },
            )
            expect(renewed.status_code == 200, f"refresh: {renewed.status_code} {renewed.text}")
            access = renewed.json()["access_token"]
            refresh = renewed.json().get("refresh_token")
            steps.append("refresh: rotated")
            revoke_path = urlsplit(metadata["revocation_endpoint"]).path
            revoked = http.post(revoke_path, data={"token": access, "client_id": client_id})
            expect(revoked.status_code == 200, f"revoke: {revoked.status_code}")
            after = http.get("/api/memories", headers={"Authorization": f"Bearer {access}"})
            expect(after.status_code == 401, f"revoked token still works: {after.status_code}")
            steps.append("revocation: revoked token refused")
        return FlowResult(issuer, client_id, access, refresh, stored_hash, steps)


class _FormParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form" and self.action is None:
            self.action = values.get("action", "")
        if tag == "input" and values.get("type") == "hidden" and "name" in values:
            self.fields[values["name"]] = values.get("value", "")


def _approve_consent(http: httpx.Client, path: str, page: str, api_key: str) -> httpx.Response:
    form = _FormParser()
    form.feed(page)
    expect(form.action is not None, "consent page without a form")
    fields = {**form.fields, "api_key": api_key, "decision": "approve"}
    return http.post(form.action or path, data=fields)


def _verify(base_url: str, cacert: Path | None) -> ssl.SSLContext | bool:
    if not base_url.startswith("https"):
        return True
    if cacert is None:
        default = Path(__file__).resolve().parents[2] / "certs" / "dev-ca.pem"
        cacert = default if default.exists() else None
    return ssl.create_default_context(cafile=str(cacert)) if cacert else True


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("url", nargs="?", default="https://localhost:8443")
    parser.add_argument("--cacert", type=Path)
    parser.add_argument("--api-key", help="approve the consent page with this key")
    args = parser.parse_args(argv)
    try:
        result = run_flow(args.url, verify=_verify(args.url, args.cacert), api_key=args.api_key)
    except (FlowError, httpx.HTTPError, KeyError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    for step in result.steps:
        print(f"ok  {step}")
    print("OAuth flow passed")
    return 0


def test_seed_flow_with_auto_consent(live_gateway: LiveGateway) -> None:
    result = run_flow(live_gateway.url, verify=live_gateway.verify, api_key=None)
    assert result.issuer == live_gateway.url
    assert result.refresh_token is not None
    assert len(result.steps) == 8


def test_seed_flow_with_api_key_consent(live_gateway_consent: LiveGateway) -> None:
    gateway = live_gateway_consent
    result = run_flow(gateway.url, verify=gateway.verify, api_key=gateway.api_key)
    assert result.issuer == gateway.url
    with pytest.raises(FlowError, match="authorize: 200"):
        run_flow(gateway.url, verify=gateway.verify, api_key=None)


def test_standalone_script_reports_success_and_failure(live_gateway: LiveGateway) -> None:
    script = Path(__file__)
    ok = subprocess.run(
        [sys.executable, str(script), live_gateway.url, "--cacert", str(live_gateway.ca)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "OAuth flow passed" in ok.stdout
    bad = subprocess.run(
        [sys.executable, str(script), "https://127.0.0.1:9", "--cacert", str(live_gateway.ca)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 1
    assert "FAILED" in bad.stderr


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
