"""The real product under test: `python -m gateway serve`, configured only by environment,
and an access token obtained from it the way a client would (DCR, then a
client_credentials grant at /oauth/token).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from tests.ports import reserved_port
from tests.proxy.conftest import Server, wait_listening

ROOT = Path(__file__).resolve().parents[1]
HS256_SECRET = "bench-hs256-secret-that-is-long-enough-0123456789"


REGISTRATION_KEY = "bench-registration-key-0123456789"


def pinned(cpus: str | None, command: list[str]) -> list[str]:
    """`command` run under `taskset -c cpus` when pinning is on."""
    return ["taskset", "-c", cpus, *command] if cpus else command


def start_gateway(
    upstream: str,
    state: Path,
    *,
    cpus: str | None,
    hs256: bool = False,
    tls: tuple[Path, Path] | None = None,
    extra_env: dict[str, str] | None = None,
) -> Server:
    port = reserved_port()
    scheme = "https" if tls else "http"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MCP_GATEWAY_UPSTREAM": upstream,
        "MCP_HTTP_PORT": str(port),
        "MCP_HTTP_HOST": "127.0.0.1",
        "MCP_GATEWAY_STATE_DIR": tempfile.mkdtemp(dir=state),
        "MCP_OAUTH_ISSUER": f"{scheme}://127.0.0.1:{port}",
        "MCP_GATEWAY_LOG_LEVEL": "WARNING",
        # client_credentials clients are operator-registered (initial access token).
        "MCP_DCR_REGISTRATION_KEY": REGISTRATION_KEY,
    }
    if hs256:
        env["MCP_OAUTH_SECRET_KEY"] = HS256_SECRET
    if tls:
        env |= {
            "MCP_HTTPS_ENABLED": "true",
            "MCP_SSL_CERT_FILE": str(tls[0]),
            "MCP_SSL_KEY_FILE": str(tls[1]),
        }
    env |= extra_env or {}
    command = pinned(cpus, [sys.executable, "-m", "gateway", "serve"])
    # The request log (one line per request) goes to a file, as a deployment's would.
    log = Path(env["MCP_GATEWAY_STATE_DIR"]) / "gateway.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stderr=out)
    server = Server(port, proc)
    try:
        wait_listening(port, proc, tls=tls is not None)
    except Exception:
        server.stop()
        raise
    return server


def oauth_token(base_url: str, scope: str, verify: str | bool = True) -> str:
    """`Bearer <JWT>` from the gateway itself: register a confidential client, then
    client_credentials for `scope`."""
    with httpx.Client(base_url=base_url, verify=verify, timeout=10) as http:
        registered = http.post(
            "/oauth/register",
            headers={"Authorization": f"Bearer {REGISTRATION_KEY}"},
            json={
                "client_name": "bench",
                "grant_types": ["client_credentials"],
                "scope": "read write",
            },
        )
        registered.raise_for_status()
        client = registered.json()
        issued = http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "scope": scope},
            auth=(client["client_id"], client["client_secret"]),
        )
        issued.raise_for_status()
        token = issued.json()["access_token"]
        check = http.get("/api/memories", headers={"Authorization": f"Bearer {token}"})
        if check.status_code != 200:
            raise RuntimeError(f"the gateway refused its own token: {check.status_code}")
        return f"Bearer {token}"


def start_backend(cpus: str | None) -> Server:
    """The baseline backend (docs/performance.md): a 1.3 KB JSON list on Starlette + uvicorn."""
    port = reserved_port()
    command = pinned(cpus, [sys.executable, "-m", "bench.backend", str(port)])
    proc = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    server = Server(port, proc)
    try:
        wait_listening(port, proc)
    except Exception:
        server.stop()
        raise
    return server
