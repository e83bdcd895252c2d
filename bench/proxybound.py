"""Proxy-bound: what each proxy itself costs, with an upstream that is not the limit.

The upstream is a static nginx (one worker) answering every workload from memory with a
~1.2 KB JSON body, ~3x the rate any of the proxies reaches, so the proxy's own CPU is
the limit. Three workloads, each driven by `wrk -t1 -c20` (a Lua script sets method,
body and headers):

- GET /api/memories (no body);
- POST /api/search with a small JSON body;
- POST /mcp, a JSON-RPC `tools/call` (the gateway reads it and checks the tool's scope).

Peers: nginx proxying with keep-alive (no auth: it cannot check a JWT without njs) and
HAProxy (Debian) verifying the same ES256 access token on every request with
`jwt_verify`, checking its `exp`, `aud` and `scope` claims, one thread (`nbthread 1`).
The gateway is the product (`python -m gateway serve`), ES256, token from its own
/oauth/token. The static upstream answers POST /mcp with a JSON-RPC batch holding an
`initialize` result (id 1), a `tools/list` result (id 2, `retrieve_memory` annotated
read-only) and a `tools/call` result, so the gateway's tool catalog (gateway.tools)
learns the tool at start-up and the `read` token may call it: the real rule, not a
policy override. A benchmark, never a test.
"""

from __future__ import annotations

import base64
import json
import os
import re
import statistics
import subprocess
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bench.product import pinned
from tests.ports import reserved_port
from tests.proxy.conftest import Server, wait_listening

MEMORIES = json.dumps(
    [
        {"id": i, "content": f"memory number {i} about the project", "tags": ["bench", "x"]}
        for i in range(16)
    ],
    separators=(",", ":"),
)
# No quotes or backslashes in the text: nginx unescapes them inside its quoted string.
_TEXT = "; ".join(f"memory {i}: a note about the project" for i in range(28))
_TOOL_RESULT = {"content": [{"type": "text", "text": _TEXT}], "isError": False}
MCP_ANSWER = json.dumps(
    [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "result": {
                "protocolVersion": "2025-06-18",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "static", "version": "1"},
            },
        },
        {
            "jsonrpc": "2.0",
            "id": 2,
            "result": {
                "tools": [
                    {
                        "name": "retrieve_memory",
                        "inputSchema": {"type": "object"},
                        "annotations": {"readOnlyHint": True},
                    }
                ]
            },
        },
        {"jsonrpc": "2.0", "id": 3, "result": _TOOL_RESULT},
    ],
    separators=(",", ":"),
)
SEARCH_BODY = json.dumps({"query": "notes about the project", "n_results": 5})
MCP_BODY = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "tools/call",
        "params": {"name": "retrieve_memory", "arguments": {"query": "project", "n_results": 5}},
    }
)

# name: (path, wrk Lua script or None for a GET)
WORKLOADS: dict[str, tuple[str, str | None]] = {
    "GET /api/memories": ("/api/memories", None),
    "POST /api/search": (
        "/api/search",
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(SEARCH_BODY)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n',
    ),
    "POST /mcp tools/call": (
        "/mcp",
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(MCP_BODY)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        'wrk.headers["Accept"] = "application/json, text/event-stream"\n'
        'wrk.headers["MCP-Protocol-Version"] = "2025-06-18"\n',
    ),
}

# The start of every nginx configuration the bench writes (a format string: {dir}).
NGINX_PRELUDE = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
"""

STATIC_CONF = (
    NGINX_PRELUDE
    + """  default_type application/json;
  server {{
    listen 127.0.0.1:{port};
    location = /api/memories {{ return 200 '{memories}'; }}
    location = /api/search {{ return 200 '{memories}'; }}
    location = /mcp {{ return 200 '{mcp}'; }}
    location / {{ return 404 '{{"detail":"Not Found"}}'; }}
  }}
}}
"""
)

HAPROXY_CONF = """
global
  nbthread 1
  maxconn 4096
  tune.bufsize 65536
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
  option http-keep-alive
frontend edge
  bind 127.0.0.1:{port}
  http-request set-var(txn.t) http_auth_bearer
  http-request deny deny_status 401 unless {{ var(txn.t) -m found }}
  http-request deny deny_status 401 unless {{ var(txn.t),jwt_header_query('$.alg') -m str ES256 }}
  http-request deny deny_status 401 unless {{ var(txn.t),jwt_verify("ES256","{pem}") -m int 1 }}
  http-request set-var(txn.now) date
  http-request set-var(txn.exp) var(txn.t),jwt_payload_query('$.exp','int')
  http-request deny deny_status 401 if {{ var(txn.exp),sub(txn.now) -m int le 0 }}
  http-request deny deny_status 401 unless {{ var(txn.t),jwt_payload_query('$.aud') -m str {aud} }}
  acl read_scope var(txn.t),jwt_payload_query('$.scope') -m reg (^|\\ )read(\\ |$)
  http-request deny deny_status 403 unless read_scope
  http-request set-header X-Auth-Subject %[var(txn.t),jwt_payload_query('$.sub')]
  default_backend upstream
backend upstream
  http-reuse always
  server static 127.0.0.1:{upstream} maxconn 64
"""


def start_static(tmp: Path, cpus: str | None) -> Server:
    port = reserved_port()
    directory = tmp / "nginx-static"
    directory.mkdir()
    conf = STATIC_CONF.format(dir=directory, port=port, memories=MEMORIES, mcp=MCP_ANSWER)
    (directory / "nginx.conf").write_text(conf)
    command = pinned(cpus, ["nginx", "-p", str(directory), "-c", str(directory / "nginx.conf")])
    proc = subprocess.Popen(command)
    wait_listening(port, proc)  # type: ignore[arg-type]
    return Server(port, proc)  # type: ignore[arg-type]


def start_haproxy(
    tmp: Path, gateway_url: str, token: str, upstream: int, cpus: str | None
) -> Server:
    """HAProxy checking the gateway's ES256 tokens: its public key from /oauth/jwks."""
    directory = tmp / "haproxy"
    directory.mkdir()
    pem = directory / "es256.pem"
    pem.write_bytes(es256_public_pem(gateway_url))
    audience = _claims(token)["aud"]
    port = reserved_port()
    conf = HAPROXY_CONF.format(port=port, pem=pem, aud=audience, upstream=upstream)
    (directory / "haproxy.cfg").write_text(conf)
    check = subprocess.run(
        ["haproxy", "-c", "-q", "-f", str(directory / "haproxy.cfg")],
        capture_output=True,
        text=True,
        check=False,
    )
    if check.returncode != 0:
        raise RuntimeError(f"haproxy refused its configuration:\n{check.stdout}{check.stderr}")
    command = pinned(cpus, ["haproxy", "-db", "-f", str(directory / "haproxy.cfg")])
    proc = subprocess.Popen(command)
    wait_listening(port, proc)  # type: ignore[arg-type]
    return Server(port, proc)  # type: ignore[arg-type]


def es256_public_pem(gateway_url: str) -> bytes:
    jwks = httpx.get(f"{gateway_url}/oauth/jwks", timeout=10).json()
    [key] = [k for k in jwks["keys"] if k.get("alg") == "ES256"][:1]
    numbers = ec.EllipticCurvePublicNumbers(
        int.from_bytes(_b64(key["x"]), "big"), int.from_bytes(_b64(key["y"]), "big"), ec.SECP256R1()
    )
    return numbers.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _claims(bearer: str) -> dict[str, object]:
    return dict(json.loads(_b64(bearer.removeprefix("Bearer ").split(".")[1])))


def check_answers(targets: dict[str, str], token: str) -> None:
    """Every target answers every workload with a 200 before anything is measured."""
    with httpx.Client(timeout=10) as http:
        for name, url in targets.items():
            for workload, (path, _) in WORKLOADS.items():
                method = "GET" if path == "/api/memories" else "POST"
                body = {"/api/search": SEARCH_BODY, "/mcp": MCP_BODY}.get(path)
                response = http.request(
                    method,
                    f"{url}{path}",
                    content=body,
                    headers={
                        "Authorization": token,
                        "Content-Type": "application/json",
                        "Accept": "application/json, text/event-stream",
                    },
                )
                if response.status_code != 200:
                    raise RuntimeError(
                        f"{name} answered {workload} with {response.status_code}: "
                        f"{response.text[:300]}"
                    )


def wrk_script(tmp: Path, workload: str) -> Path | None:
    script = WORKLOADS[workload][1]
    if script is None:
        return None
    path = tmp / f"wrk-{re.sub(r'[^a-z]+', '-', workload.lower())}.lua"
    path.write_text(script)
    return path


def measure(
    targets: dict[str, tuple[str, int]],
    token: str,
    tmp: Path,
    args: object,
    cpus: str | None,
    workloads: list[str] | None = None,
) -> dict[str, dict[str, list[dict]]]:
    """workload -> target -> rounds; interleaved: each round runs every workload (or
    those named in `workloads`) on every target once, so drift (other work on the
    machine) hits all of them alike; the per-round ratios pair runs made seconds apart."""
    from bench.run import cpu_seconds, wrk

    duration: int = getattr(args, "duration", 5)
    connections: int = getattr(args, "connections", 20)
    rounds: int = getattr(args, "rounds", 3)
    chosen = {name: WORKLOADS[name] for name in workloads or WORKLOADS}
    scripts = {name: wrk_script(tmp, name) for name in chosen}
    results: dict[str, dict[str, list[dict]]] = {w: {t: [] for t in targets} for w in chosen}
    for url, _ in targets.values():  # warm-up
        wrk(url, token, 1, connections, cpus)
    for number in range(rounds):
        # Every other round in reverse order, so no target always runs right after
        # another (load that rises or falls within a round hits each alike).
        order = list(targets.items()) if number % 2 == 0 else list(targets.items())[::-1]
        for workload, (path, _) in chosen.items():
            for name, (url, pid) in order:
                before = cpu_seconds(pid)
                result = wrk(url, token, duration, connections, cpus, path, scripts[workload])
                used = cpu_seconds(pid) - before
                result["cpu_us"] = used / max(result["rps"] * duration, 1) * 1e6
                results[workload][name].append(result)
                print(
                    f"round {number + 1}: {workload}: {name}: {result['rps']:,.0f} req/s, "
                    f"{result['cpu_us']:.1f} µs CPU/req",
                    flush=True,
                )
    return results


def report(results: dict[str, dict[str, list[dict]]], load: tuple[float, float, float]) -> None:
    print(
        f"\n### Proxy-bound (static nginx upstream; load average at start "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, at end "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())})\n"
    )
    print(
        "| workload | upstream direct | nginx | HAProxy+JWT | gateway | x nginx | x HAProxy "
        "| CPU µs/req nginx / HAProxy / gateway | CPU x nginx |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for workload, rows in results.items():
        rps = {name: statistics.median(r["rps"] for r in runs) for name, runs in rows.items()}
        cpu = {name: statistics.median(r["cpu_us"] for r in runs) for name, runs in rows.items()}
        flags = {
            name: " (errors!)" if any(r["non2xx"] for r in runs) else ""
            for name, runs in rows.items()
        }
        print(
            f"| {workload} | {rps['upstream direct']:,.0f}{flags['upstream direct']} "
            f"| {rps['nginx']:,.0f}{flags['nginx']} "
            f"| {rps['HAProxy+JWT']:,.0f}{flags['HAProxy+JWT']} "
            f"| {rps['gateway']:,.0f}{flags['gateway']} "
            f"| {_ratio(rows, 'gateway', 'nginx', 'rps'):.2f} "
            f"| {_ratio(rows, 'gateway', 'HAProxy+JWT', 'rps'):.2f} "
            f"| {cpu['nginx']:.1f} / {cpu['HAProxy+JWT']:.1f} / {cpu['gateway']:.1f} "
            f"| {_ratio(rows, 'gateway', 'nginx', 'cpu_us'):.2f} |"
        )
    print(
        "\n(req/s: medians over rounds; x nginx / x HAProxy / CPU x nginx: medians of the "
        "per-round ratios; CPU: the proxy's own utime + stime from /proc per request)"
    )


def targets_summary(results: dict[str, dict[str, list[dict]]]) -> list[tuple[str, str, str]]:
    """The proxy-bound docs/performance.md targets: (name, measured, target) rows."""
    rows = []
    for workload, runs in results.items():
        cpu = _ratio(runs, "gateway", "nginx", "cpu_us")
        rows.append((f"proxy-bound CPU/req, {workload}", f"{cpu:.2f} x nginx", "<= 3.0 x (2.0)"))
        rows.append(
            (
                f"proxy-bound req/s, {workload}",
                f"{_ratio(runs, 'gateway', 'nginx', 'rps'):.2f} x nginx, "
                f"{_ratio(runs, 'gateway', 'HAProxy+JWT', 'rps'):.2f} x HAProxy",
                ">= 0.35 x nginx, >= 1.0 x HAProxy",
            )
        )
    return rows


def _ratio(rows: dict[str, list[dict]], name: str, base: str, key: str) -> float:
    pairs = zip(rows[name], rows[base], strict=True)
    return statistics.median(a[key] / max(b[key], 1e-9) for a, b in pairs)
