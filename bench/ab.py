"""A/B: the gateway from two source trees, same backend, same wrk, interleaved rounds.

    uv run python bench/ab.py OTHER_TREE [--rounds 5] [--duration 4] [--no-pin]
        [--env-a KEY=VALUE ...] [--env-b KEY=VALUE ...]
        [--proxy-bound] [--workload "POST /mcp tools/call" ...]

OTHER_TREE is a checkout of another commit (`git archive REV | tar -x -C DIR`), or `.`
to compare this tree with itself under different settings (`--env-a`/`--env-b`, e.g.
`--env-a MCP_GATEWAY_REQUEST_LOG=false --env-b MCP_GATEWAY_METRICS_ADDR=127.0.0.1:9464`
or `--env-b MCP_GATEWAY_WORKERS=2 --no-pin`); "B" is this tree. Prints the median req/s
and proxy CPU µs per request of each, and the median of the per-round B/A ratios.
`--proxy-bound` puts the static nginx upstream of bench/proxybound.py behind both and
runs its workloads (all three, or those named with `--workload`). A benchmark tool,
never a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import product, proxybound  # noqa: E402
from bench.run import LOAD_CPU, PROXY_CPU, cpu_seconds, wrk  # noqa: E402
from tests.proxy.conftest import Server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("other", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=4)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--env-a", action="append", default=[], help="KEY=VALUE for A")
    parser.add_argument("--env-b", action="append", default=[], help="KEY=VALUE for B")
    parser.add_argument("--proxy-bound", action="store_true", help="static nginx upstream")
    parser.add_argument("--workload", action="append", choices=list(proxybound.WORKLOADS))
    args = parser.parse_args()
    envs = {
        "A": dict(item.split("=", 1) for item in args.env_a),
        "B": dict(item.split("=", 1) for item in args.env_b),
    }
    workloads = args.workload or (list(proxybound.WORKLOADS) if args.proxy_bound else [None])
    proxy_cpu, load_cpu = (None, None) if args.no_pin else (PROXY_CPU, LOAD_CPU)
    print(f"load average {os.getloadavg()[0]:.2f}; pinning {'off' if args.no_pin else 'on'}")
    print(f"A: {args.other} {envs['A']}\nB: {ROOT} {envs['B']}")
    servers: list[Server] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            backend = (
                proxybound.start_static(Path(tmp), load_cpu)
                if args.proxy_bound
                else product.start_backend(load_cpu)
            )
            servers.append(backend)
            trees = {"A": args.other.resolve(), "B": ROOT}
            gateways = {}
            for name, tree in trees.items():
                product.ROOT = tree  # start_gateway runs `python -m gateway` from ROOT
                gateways[name] = product.start_gateway(
                    backend.url, Path(tmp), cpus=proxy_cpu, extra_env=envs[name]
                )
                servers.append(gateways[name])
            product.ROOT = ROOT
            tokens = {name: product.oauth_token(g.url, "read") for name, g in gateways.items()}
            rows: dict[str | None, dict[str, list[tuple[float, float]]]] = {
                w: {"A": [], "B": []} for w in workloads
            }
            wrk(gateways["A"].url, tokens["A"], 1, args.connections, load_cpu)  # warm-up
            for number in range(args.rounds):
                for workload in workloads:
                    path = proxybound.WORKLOADS[workload][0] if workload else "/api/memories"
                    script = proxybound.wrk_script(Path(tmp), workload) if workload else None
                    for name, gateway in gateways.items():
                        before = cpu_seconds(gateway.proc.pid)
                        result = wrk(
                            gateway.url,
                            tokens[name],
                            args.duration,
                            args.connections,
                            load_cpu,
                            path,
                            script,
                        )
                        rps = result["rps"]
                        used = cpu_seconds(gateway.proc.pid) - before
                        rows[workload][name].append((rps, used / max(rps * args.duration, 1) * 1e6))
                        errors = " (errors!)" if result["non2xx"] else ""
                        print(
                            f"round {number + 1} {workload or 'GET'} {name}: {rps:,.0f} req/s"
                            f"{errors}",
                            flush=True,
                        )
        finally:
            for server in reversed(servers):
                server.stop()
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    for workload, table in rows.items():
        print(f"\n{workload or 'GET /api/memories (backend)'}\n")
        print("| tree | req/s (median) | CPU µs/req (median) |\n|---|---|---|")
        for name, results in table.items():
            rps = statistics.median(r for r, _ in results)
            cpu = statistics.median(c for _, c in results)
            print(f"| {name} | {rps:,.0f} | {cpu:.1f} |")
        pairs = list(zip(table["A"], table["B"], strict=True))
        ratios = [b[0] / max(a[0], 1) for a, b in pairs]
        cpus = [b[1] / max(a[1], 1e-9) for a, b in pairs]
        print(
            f"B/A req/s, median of per-round ratios: {statistics.median(ratios):.3f}; "
            f"B/A CPU/req: {statistics.median(cpus):.3f}"
        )


if __name__ == "__main__":
    main()
