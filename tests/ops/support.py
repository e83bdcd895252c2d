"""The real `memory-gateway serve` process (plain HTTP on loopback) for operations tests,
the test upstream beside it, and a complete OAuth flow a client would run against it."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.ports import bound_socket, handed_over, port_of, reserved_port, start_retrying

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "ops-test-api-key-0123456789abcdef"
REDIRECT = "http://127.0.0.1:9/callback"


@dataclass
class Gateway:
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int | None = None
    state_dir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics(self) -> str:
        assert self.metrics_port is not None
        response = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5)
        response.raise_for_status()
        return response.text

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request_lines(self, settle: float = 0.6) -> list[dict[str, object]]:
        """Every request-log line so far (JSON), after the log's flush interval."""
        time.sleep(settle)
        lines = []
        for line in self.log().splitlines():
            if line.startswith("{") and '"request_id"' in line:
                lines.append(json.loads(line))
        return lines

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def start_gateway(
    tmp: Path,
    upstream: str,
    env: Mapping[str, str] | None = None,
    *args: str,
    metrics: bool = True,
    wait_path: str = "/healthz",
) -> Gateway:
    """`serve` on a socket bound here and handed over (no port race); with `--workers`
    the supervisor binds the port itself, so that one (and the metrics port, which the
    gateway binds) is a `reserved_port`, the start retried if it was taken meanwhile."""
    return start_retrying(lambda: _start_gateway(tmp, upstream, env, args, metrics, wait_path))


def _start_gateway(
    tmp: Path,
    upstream: str,
    env: Mapping[str, str] | None,
    args: tuple[str, ...],
    metrics: bool,
    wait_path: str,
) -> Gateway:
    supervised = "--workers" in args
    sock = None if supervised else bound_socket()
    port = reserved_port() if sock is None else port_of(sock)
    handing, fds = handed_over(sock) if sock is not None else ({}, ())
    metrics_port = reserved_port() if metrics else None
    state = tmp / f"state-{port}"
    full = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MCP_HTTP_PORT": str(port),
        "MCP_GATEWAY_UPSTREAM": upstream,
        "MCP_GATEWAY_STATE_DIR": str(state),
        "MCP_OAUTH_ISSUER": f"http://127.0.0.1:{port}",
        "MCP_OAUTH_CONSENT": "auto",
        "MCP_API_KEY": API_KEY,
        "MCP_GATEWAY_LOG_FORMAT": "json",
        **({"MCP_GATEWAY_METRICS_ADDR": f"127.0.0.1:{metrics_port}"} if metrics_port else {}),
        **(env or {}),
        **handing,
    }
    log_path = tmp / f"gateway-{port}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", *args],
            cwd=ROOT,
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=fds,
        )
    if sock is not None:
        sock.close()  # the child holds the listener now
    operator_env = {k: v for k, v in full.items() if k not in handing}
    gateway = Gateway(port, proc, log_path, metrics_port, state, operator_env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}:\n{gateway.log()}")
        try:
            # Connected (to the handed-over backlog) is not served: wait for the answer.
            answer = httpx.get(gateway.url + wait_path, timeout=httpx.Timeout(1, read=30))
            if answer.status_code == 200:
                return gateway
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    gateway.stop()
    raise RuntimeError(f"gateway did not start:\n{gateway.log()}")


@dataclass(frozen=True)
class Tokens:
    client_id: str
    access_token: str
    refresh_token: str | None


def register(http: httpx.Client) -> str:
    response = http.post(
        "/oauth/register",
        json={
            "client_name": "ops test",
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["client_id"])


def authorize(http: httpx.Client, client_id: str, resource: str) -> tuple[str, str]:
    """(code, verifier) from the authorization endpoint (consent `auto`)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    response = http.get(
        "/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": REDIRECT,
            "scope": "read write offline_access",
            "state": "s1",
            "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256",
            "resource": resource,
        },
    )
    assert response.status_code in (302, 303), response.text
    query = parse_qs(urlsplit(response.headers["location"]).query)
    return query["code"][0], verifier


def exchange(http: httpx.Client, client_id: str, code: str, verifier: str, resource: str) -> Tokens:
    response = http.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "client_id": client_id,
            "redirect_uri": REDIRECT,
            "resource": resource,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return Tokens(client_id, body["access_token"], body.get("refresh_token"))


def oauth_flow(base_url: str) -> Tokens:
    resource = f"{base_url}/mcp"
    with httpx.Client(base_url=base_url, timeout=10) as http:
        client_id = register(http)
        code, verifier = authorize(http, client_id, resource)
        return exchange(http, client_id, code, verifier, resource)


def refresh(base_url: str, tokens: Tokens) -> Tokens:
    assert tokens.refresh_token is not None
    response = httpx.post(
        f"{base_url}/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens.refresh_token,
            "client_id": tokens.client_id,
            "resource": f"{base_url}/mcp",
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return Tokens(tokens.client_id, body["access_token"], body.get("refresh_token"))


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text output (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        base, _, rest = series.partition("{")
        if base != name:
            continue
        found = dict(part.split("=", 1) for part in rest.rstrip("}").split(",") if "=" in part)
        if all(found.get(k) == f'"{v}"' for k, v in labels.items()):
            return float(value)
    return 0.0
