"""Gateway vs nginx vs direct, on loopback, one table of ratios (docs/performance.md).

    uv run python bench/run.py [--duration 5] [--rounds 3] [--connections 20] [--no-pin]

Needs `nginx` and `wrk` on PATH (Debian: apt-get install -y nginx-light wrk). A
benchmark, never a test: it prints numbers and never fails on one. The gateway is the
real product (`python -m gateway serve`, environment only) and its token comes from its
own /oauth/token. Method: bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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

from bench import proxybound  # noqa: E402
from bench.product import oauth_token, pinned, start_backend, start_gateway  # noqa: E402
from tests.ports import reserved_port  # noqa: E402
from tests.proxy.conftest import Server, wait_listening  # noqa: E402

MB = 1024 * 1024
NGINX_CONF = (
    proxybound.NGINX_PRELUDE
    + """\
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
)


PROXY_CPU, LOAD_CPU = "0", "1"


def main() -> None:
    args = parse()
    missing = [tool for tool in ("nginx", "wrk", "haproxy") if shutil.which(tool) is None]
    if missing:
        print(f"missing {', '.join(missing)}: apt-get install -y nginx-light wrk haproxy")
        sys.exit(2)
    load = os.getloadavg()
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    if load[0] > 1:
        print(f"WARNING: load average {load[0]:.2f} > 1: other work shares these CPUs")
    # The streaming step holds --streams SSE responses from one address: above the
    # per-address connection cap (256), which is not what this benchmark measures.
    os.environ.setdefault("MCP_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS", str(args.streams + 256))
    with tempfile.TemporaryDirectory() as tmp:
        run(Path(tmp), args)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per target")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    parser.add_argument(
        "--proxy-bound-only", action="store_true", help="only the proxy-bound workloads"
    )
    parser.add_argument(
        "--no-proxy-bound", action="store_true", help="skip the proxy-bound workloads"
    )
    return parser.parse_args()


def run(tmp: Path, args: argparse.Namespace) -> None:
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    proxy_cpu, load_cpu = (PROXY_CPU, LOAD_CPU) if pin else (None, None)
    print(
        f"pinning: proxies on CPU {PROXY_CPU}, backend + load generator on CPU {LOAD_CPU}"
        if pin
        else "pinning: off"
    )
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    servers: list[Server] = []
    bound: dict[str, dict[str, list[dict]]] | None = None
    try:
        if not args.no_proxy_bound:
            bound = proxy_bound(tmp, args, proxy_cpu, load_cpu)
            if args.proxy_bound_only:
                print("\n| docs/performance.md target | measured | target |\n|---|---|---|")
                for row in proxybound.targets_summary(bound):
                    print("| " + " | ".join(row) + " |")
                return
        backend = keep(servers, start_backend(load_cpu))
        es = keep(servers, start_gateway(backend.url, tmp, cpus=proxy_cpu))
        hs = keep(servers, start_gateway(backend.url, tmp, cpus=proxy_cpu, hs256=True))
        es_tls = keep(
            servers, start_gateway(backend.url, tmp, cpus=proxy_cpu, tls=(cert_file, key_file))
        )
        nginx = keep(servers, start_nginx(tmp, backend.port, tls=None, cpus=proxy_cpu))
        nginx_tls = keep(servers, start_nginx(tmp, backend.port, tls=tmp, cpus=proxy_cpu))
        es_token = oauth_token(es.url, "read")
        hs_token = oauth_token(hs.url, "read")
        tls_token = oauth_token(https(es_tls), "read", verify=str(tmp / "ca.pem"))
        targets = {
            "backend direct": (backend.url, es_token),
            "nginx": (nginx.url, es_token),
            "gateway ES256": (es.url, es_token),
            "gateway HS256": (hs.url, hs_token),
            "nginx TLS": (https(nginx_tls), es_token),
            "gateway TLS ES256": (https(es_tls), tls_token),
        }
        pids = {
            "backend direct": backend.proc.pid,
            "nginx": nginx.proc.pid,
            "gateway ES256": es.proc.pid,
            "gateway HS256": hs.proc.pid,
            "nginx TLS": nginx_tls.proc.pid,
            "gateway TLS ES256": es_tls.proc.pid,
        }
        rounds = throughput(targets, pids, args, load_cpu)
        report(rounds)
        for log in sorted(tmp.glob("nginx-*/error.log")):
            if log.read_text().strip():
                print(f"{log.parent.name} error log:\n{log.read_text()[-2000:]}", file=sys.stderr)
        peak = statistics.median(r["rps"] for r in rounds["nginx"])
        latency = open_loop(
            {"nginx": targets["nginx"], "gateway ES256": targets["gateway ES256"]},
            peak / 2,
            args,
            load_cpu,
        )
        writer = oauth_token(es.url, "read write")
        streaming(backend, nginx, es, writer, args.streams)
        summary(rounds, latency, bound)
    finally:
        for server in reversed(servers):
            server.stop()


def proxy_bound(
    tmp: Path,
    args: argparse.Namespace,
    proxy_cpu: str | None,
    load_cpu: str | None,
) -> dict[str, dict[str, list[dict]]]:
    """The proxy-bound rows (bench/proxybound.py), their servers stopped afterwards."""
    load = os.getloadavg()
    started: list[Server] = []
    try:
        static = keep(started, proxybound.start_static(tmp, load_cpu))
        gateway = keep(started, start_gateway(static.url, tmp, cpus=proxy_cpu))
        token = oauth_token(gateway.url, "read")
        nginx = keep(started, start_nginx(tmp, static.port, tls=None, cpus=proxy_cpu, name="bound"))
        haproxy = keep(
            started, proxybound.start_haproxy(tmp, gateway.url, token, static.port, proxy_cpu)
        )
        targets = {
            "upstream direct": (static.url, static.proc.pid),
            "nginx": (nginx.url, nginx.proc.pid),
            "HAProxy+JWT": (haproxy.url, haproxy.proc.pid),
            "gateway": (gateway.url, gateway.proc.pid),
        }
        proxybound.check_answers({name: url for name, (url, _) in targets.items()}, token)
        results = proxybound.measure(targets, token, tmp, args, load_cpu)
        proxybound.report(results, load)
        return results
    finally:
        for server in reversed(started):
            server.stop()


def keep(servers: list[Server], server: Server) -> Server:
    servers.append(server)
    return server


def https(server: Server) -> str:
    return f"https://127.0.0.1:{server.port}"


def start_nginx(
    tmp: Path, backend: int, tls: Path | None, cpus: str | None, name: str | None = None
) -> Server:
    port = reserved_port()
    name = name or ("tls" if tls else "plain")
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
    command = pinned(cpus, ["nginx", "-p", str(directory), "-c", str(directory / "nginx.conf")])
    proc = subprocess.Popen(command)
    wait_listening(port, proc, tls=tls is not None)  # type: ignore[arg-type]
    return Server(port, proc)  # type: ignore[arg-type]


def throughput(
    targets: dict[str, tuple[str, str]],
    pids: dict[str, int],
    args: argparse.Namespace,
    cpus: str | None,
) -> dict[str, list[dict]]:
    """Interleaved: every round runs every target once, so drift hits all of them."""
    results: dict[str, list[dict]] = {name: [] for name in targets}
    wrk(targets["nginx"][0], targets["nginx"][1], 1, args.connections, cpus)  # warm-up
    for number in range(args.rounds):
        for name, (url, token) in targets.items():
            before = cpu_seconds(pids[name])
            result = wrk(url, token, args.duration, args.connections, cpus)
            used = cpu_seconds(pids[name]) - before
            result["cpu_us"] = used / max(result["rps"] * args.duration, 1) * 1e6
            results[name].append(result)
            print(f"round {number + 1}: {name}: {result['rps']:,.0f} req/s", flush=True)
    return results


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its descendants (nginx's workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return total


def wrk(
    url: str,
    token: str,
    seconds: int,
    connections: int,
    cpus: str | None,
    path: str = "/api/memories",
    script: Path | None = None,
) -> dict:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-H", f"Authorization: {token}"]
    if script is not None:
        command += ["-s", str(script)]
    out = subprocess.run(
        pinned(cpus, [*command, f"{url}{path}"]), capture_output=True, text=True, check=False
    ).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    rps = float(found.group(1)) if found else 0.0
    if rps == 0:
        print(f"wrk against {url} failed:\n{out}", file=sys.stderr)
    return {"rps": rps, "non2xx": "Non-2xx" in out or "Socket errors" in out}


def ratio(rounds: dict[str, list[dict]], name: str, base: str) -> float:
    """Median over rounds of (target / base) measured in the same round."""
    pairs = zip(rounds[name], rounds[base], strict=True)
    return statistics.median(a["rps"] / max(b["rps"], 1) for a, b in pairs)


def base_of(name: str) -> str:
    return "nginx TLS" if "TLS" in name else "nginx"


def report(rounds: dict[str, list[dict]]) -> None:
    print("\n| path | req/s (median) | x nginx (median of per-round ratios) | CPU µs/req |")
    print("|---|---|---|---|")
    for name, results in rounds.items():
        flag = " (errors!)" if any(r["non2xx"] for r in results) else ""
        median = statistics.median(r["rps"] for r in results)
        cpu = statistics.median(r["cpu_us"] for r in results)
        print(
            f"| {name} | {median:,.0f}{flag} | {ratio(rounds, name, base_of(name)):.2f} "
            f"| {cpu:.0f} |"
        )


GEN_LATE_MAX_MS = 2.5  # the generator wakes once a millisecond: ~1-2 ms late by design


def valid(run: dict) -> bool:
    """The generator kept its schedule: it achieved the rate and woke on time."""
    return run["achieved_rps"] >= 0.97 * run["offered_rps"] and (
        run["gen_late_p99_ms"] <= GEN_LATE_MAX_MS
    )


def open_loop(
    targets: dict[str, tuple[str, str]], rate: float, args: argparse.Namespace, cpus: str | None
) -> dict[str, dict]:
    """p50/p99 at a fixed offered rate (half nginx's peak), interleaved like throughput.

    If the generator cannot keep the schedule against nginx in either of two probes (one
    can fail on a stall of the machine's, not of the rate's), the rate is halved for
    every target and that is printed. Every measured run is checked the same way
    afterwards; a row whose runs did not all keep the schedule is marked INVALID."""
    seconds = min(args.duration, 8)
    nginx_url, nginx_token = targets["nginx"]
    for _ in range(3):
        probe = openloop(nginx_url, nginx_token, rate, seconds, cpus)
        if not valid(probe):
            print(
                f"open-loop probe off schedule at {rate:,.0f} req/s (late p99 "
                f"{probe['gen_late_p99_ms']:.1f} ms): probing once more"
            )
            probe = openloop(nginx_url, nginx_token, rate, seconds, cpus)
        if valid(probe):
            break
        print(
            f"open-loop generator saturated at {rate:,.0f} req/s (achieved "
            f"{probe['achieved_rps']:,.0f}, late p99 {probe['gen_late_p99_ms']:.1f} ms): halving"
        )
        rate /= 2
    results: dict[str, list[dict]] = {name: [] for name in targets}
    for _ in range(args.rounds):
        for name, (url, token) in targets.items():
            results[name].append(openloop(url, token, rate, seconds, cpus))
    merged = {name: median_of(rows) for name, rows in results.items()}
    print(
        f"\n| open loop, {rate:,.0f} req/s offered (half nginx peak) | achieved | "
        "p50 ms | p99 ms | from due p50 / p99 ms | service p50 / p99 ms | "
        "generator late p99 ms | valid runs |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in merged.items():
        good = sum(valid(run) for run in results[name])
        print(
            f"| {name} | {r['achieved_rps']:,.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
            f"{r['scheduled_p50_ms']:.3f} / {r['scheduled_p99_ms']:.3f} | "
            f"{r['service_p50_ms']:.3f} / {r['service_p99_ms']:.3f} | "
            f"{r['gen_late_p99_ms']:.2f} | {good}/{len(results[name])} |"
        )
        r["valid"] = float(good == len(results[name]))
    merged["rate"] = {"offered": rate}
    return merged


def openloop(url: str, token: str, rate: float, seconds: int, cpus: str | None) -> dict:
    command = [sys.executable, "-m", "bench.openloop", f"{url}/api/memories", str(rate)]
    out = subprocess.run(
        pinned(cpus, [*command, str(seconds), "32", token]),
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        return dict(json.loads(out.stdout))
    except ValueError:
        print(f"open-loop run against {url} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
        keys = ("p50_ms", "p99_ms", "scheduled_p50_ms", "scheduled_p99_ms", "service_p50_ms")
        failed = dict.fromkeys((*keys, "service_p99_ms", "mean_ms"), float("nan"))
        return failed | {"offered_rps": rate, "achieved_rps": 0.0, "gen_late_p99_ms": float("inf")}


def median_of(rows: list[dict]) -> dict:
    return {key: statistics.median(row[key] for row in rows) for key in rows[0]}


def summary(
    rounds: dict[str, list[dict]],
    latency: dict[str, dict],
    bound: dict[str, dict[str, list[dict]]] | None = None,
) -> None:
    nginx, gateway = latency["nginx"], latency["gateway ES256"]
    rows = [
        ("throughput, plain (ES256 JWT)", ratio(rounds, "gateway ES256", "nginx"), ">= 0.8 x"),
        ("throughput, plain (HS256 JWT)", ratio(rounds, "gateway HS256", "nginx"), ">= 0.8 x"),
        (
            "throughput, TLS (ES256 JWT)",
            ratio(rounds, "gateway TLS ES256", "nginx TLS"),
            ">= 0.6 x",
        ),
    ]
    print("\n| docs/performance.md target | measured | target |")
    print("|---|---|---|")
    for name, value, target in rows:
        print(f"| {name} | {value:.2f} x | {target} |")
    rate = latency["rate"]["offered"]
    note = "" if nginx["valid"] and gateway["valid"] else " (INVALID: generator off schedule)"
    for pct, target in (("p50", "<= +0.3 ms"), ("p99", "<= +2 ms")):
        added = gateway[f"{pct}_ms"] - nginx[f"{pct}_ms"]
        print(f"| added {pct} at {rate:,.0f} req/s | {added:+.3f} ms{note} | {target} |")
    for row in proxybound.targets_summary(bound) if bound else []:
        print("| " + " | ".join(row) + " |")


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
