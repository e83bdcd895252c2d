"""Gateway vs nginx vs direct, on loopback, one table of ratios (PERF.md).

    uv run python bench/run.py [--duration 8] [--connections 20]

Needs `nginx` and `wrk` on PATH (Debian: apt-get install -y nginx-light wrk). A
benchmark, never a test: it prints numbers and never fails on one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import trustme  # noqa: E402

from tests.proxy.conftest import Server, bearer, free_port, start, wait_listening  # noqa: E402

MB = 1024 * 1024
NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    {tls}
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Auth-Subject bench;
      proxy_buffering off;
    }}
  }}
}}
"""


def main() -> None:
    args = parse()
    missing = [tool for tool in ("nginx", "wrk") if shutil.which(tool) is None]
    if missing:
        print(f"missing {', '.join(missing)}: apt-get install -y nginx-light wrk")
        sys.exit(2)
    with tempfile.TemporaryDirectory() as tmp:
        run(Path(tmp), args)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--streams", type=int, default=1000)
    return parser.parse_args()


def run(tmp: Path, args: argparse.Namespace) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp / "key.pem"))
    servers: list[Server] = []
    try:
        backend = keep(servers, start("bench.backend"))
        gateway = keep(servers, start("tests.proxy.gateway_server", backend.url))
        gateway_tls = keep(
            servers,
            start(
                "tests.proxy.gateway_server",
                backend.url,
                f"ssl_certfile={tmp / 'cert.pem'}",
                f"ssl_keyfile={tmp / 'key.pem'}",
            ),
        )
        nginx = keep(servers, start_nginx(tmp, backend.port, tls=None))
        nginx_tls = keep(servers, start_nginx(tmp, backend.port, tls=tmp))
        token = bearer("read")["Authorization"]
        d, c = args.duration, args.connections
        rows = [
            ("backend direct", wrk(backend.url, token, d, c)),
            ("nginx, 1 worker, keep-alive upstream", wrk(nginx.url, token, d, c)),
            ("gateway (ProxyApp, HS256, uvloop+httptools)", wrk(gateway.url, token, d, c)),
            ("nginx TLS", wrk(https(nginx_tls), token, d, c)),
            ("gateway TLS (uvicorn ssl)", wrk(https(gateway_tls), token, d, c)),
        ]
        report(rows)
        for log in sorted(tmp.glob("nginx-*/error.log")):
            if log.read_text().strip():
                print(f"{log.parent.name} error log:\n{log.read_text()[-2000:]}", file=sys.stderr)
        half = [
            ("nginx", wrk(nginx.url, token, d, 2, latency=True)),
            ("gateway", wrk(gateway.url, token, d, 2, latency=True)),
        ]
        report_latency(half)
        writer = bearer("read", "write")["Authorization"]
        streaming(backend, nginx, gateway, writer, args.streams)
    finally:
        for server in reversed(servers):
            server.stop()


def keep(servers: list[Server], server: Server) -> Server:
    servers.append(server)
    return server


def https(server: Server) -> str:
    return f"https://127.0.0.1:{server.port}"


def start_nginx(tmp: Path, backend: int, tls: Path | None) -> Server:
    port = free_port()
    name = "tls" if tls else "plain"
    directory = tmp / f"nginx-{name}"
    directory.mkdir()
    ssl = (
        f"listen 127.0.0.1:{port + 0} ssl; ssl_certificate {tls}/cert.pem; "
        f"ssl_certificate_key {tls}/key.pem;"
        if tls
        else ""
    )
    conf = NGINX_CONF.format(dir=directory, backend=backend, port=port, tls="")
    if tls:
        conf = conf.replace(f"listen 127.0.0.1:{port};", ssl)
    (directory / "nginx.conf").write_text(conf)
    proc = subprocess.Popen(["nginx", "-p", str(directory), "-c", str(directory / "nginx.conf")])
    wait_listening(port, proc)  # type: ignore[arg-type]
    return Server(port, proc)  # type: ignore[arg-type]


def wrk(url: str, token: str, seconds: int, connections: int, latency: bool = False) -> dict:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-H", f"Authorization: {token}"]
    if latency:
        command.append("--latency")
    out = subprocess.run(
        [*command, f"{url}/api/memories"], capture_output=True, text=True, check=False
    ).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    rps = float(found.group(1)) if found else 0.0
    if rps == 0:
        print(f"wrk against {url} failed:\n{out}", file=sys.stderr)
    result = {"rps": rps, "non2xx": "Non-2xx" in out or "Socket errors" in out}
    for pct in ("50", "99"):
        match = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)", out, re.M)
        if match:
            value, unit = float(match.group(1)), match.group(2)
            result[f"p{pct}"] = (
                value / 1000 if unit == "us" else value * (1000 if unit == "s" else 1)
            )
    return result


def report(rows: list[tuple[str, dict]]) -> None:
    plain = rows[1][1]["rps"]
    tls = rows[3][1]["rps"]
    print("\n| path | req/s | x nginx |")
    print("|---|---|---|")
    for i, (name, result) in enumerate(rows):
        base = tls if i >= 3 else plain
        flag = " (errors!)" if result["non2xx"] else ""
        print(f"| {name} | {result['rps']:,.0f}{flag} | {result['rps'] / max(base, 1):.2f} |")


def report_latency(rows: list[tuple[str, dict]]) -> None:
    print("\n| 2 connections (light load) | req/s | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['rps']:,.0f} | {r.get('p50', 0):.3f} | {r.get('p99', 0):.3f} |")


def streaming(backend: Server, nginx: Server, gateway: Server, token: str, streams: int) -> None:
    headers = {"Authorization": token}
    print("\n| streaming | value |")
    print("|---|---|")
    for name, server in (("direct", backend), ("nginx", nginx), ("gateway", gateway)):
        delays = sse_delays(server.url, headers)
        print(
            f"| SSE event latency via {name}, p50 / max (ms) | "
            f"{statistics.median(delays):.2f} / {max(delays):.2f} |"
        )
    before = gateway.rss_kib()
    opened = asyncio.run(hold_streams(gateway.port, token, streams, gateway))
    print(
        f"| gateway RSS idle → with {opened} open SSE streams (MiB) | "
        f"{before / 1024:.0f} → {opened_rss[0] / 1024:.0f} |"
    )
    down, up = transfer(gateway, headers)
    print(f"| gateway RSS growth, 100 MB download (MiB) | {down / 1024:.1f} |")
    print(f"| gateway RSS growth, 100 MB upload (MiB) | {up / 1024:.1f} |")


opened_rss = [0]


def sse_delays(url: str, headers: dict[str, str]) -> list[float]:
    delays: list[float] = []
    with (
        httpx.Client(timeout=10) as http,
        http.stream("GET", f"{url}/api/sse?n=50&interval=0.02", headers=headers) as response,
    ):
        buffer = ""
        for text in response.iter_text():
            arrived = time.time()
            buffer += text
            while "\n\n" in buffer:
                event, buffer = buffer.split("\n\n", 1)
                delays.append((arrived - float(event.split("data: ", 1)[1])) * 1000)
    return delays


async def hold_streams(port: int, token: str, count: int, gateway: Server) -> int:
    request = (
        f"GET /api/stall?delay=60 HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n\r\n"
    ).encode()

    async def one() -> asyncio.StreamWriter | None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            await reader.readuntil(b"data: first")
            return writer
        except OSError:
            return None

    writers: list[asyncio.StreamWriter] = []
    for start_at in range(0, count, 100):
        batch = await asyncio.gather(*(one() for _ in range(min(100, count - start_at))))
        writers += [w for w in batch if w is not None]
    opened_rss[0] = gateway.rss_kib()
    for writer in writers:
        writer.close()
    await asyncio.sleep(0.5)
    return len(writers)


def transfer(gateway: Server, headers: dict[str, str]) -> tuple[int, int]:
    with httpx.Client(base_url=gateway.url, timeout=60) as http:
        before = peak = gateway.rss_kib()
        with http.stream("GET", f"/api/download?size={100 * MB}", headers=headers) as response:
            for _ in response.iter_raw(MB):
                peak = max(peak, gateway.rss_kib())
        down = peak - before
        before = peak = gateway.rss_kib()
        marks = [peak]

        def body():  # type: ignore[no-untyped-def]
            for _ in range(100):
                marks.append(gateway.rss_kib())
                yield b"u" * MB

        http.post(
            "/api/memories/upload",
            content=body(),
            headers={**headers, "Content-Length": str(100 * MB)},
        )
        return down, max(marks) - before


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
