"""A/B: the gateway from two source trees, same backend, same wrk, interleaved rounds.

    uv run python bench/ab.py OTHER_TREE [--rounds 5] [--duration 4] [--no-pin]
        [--env-a KEY=VALUE ...] [--env-b KEY=VALUE ...]

OTHER_TREE is a checkout of another commit (`git archive REV | tar -x -C DIR`), or `.`
to compare this tree with itself under different settings (`--env-a`/`--env-b`, e.g.
`--env-a MCP_GATEWAY_REQUEST_LOG=false --env-b MCP_GATEWAY_METRICS_ADDR=127.0.0.1:9464`
or `--env-b MCP_GATEWAY_WORKERS=2 --no-pin`); "B" is this tree. Prints the median req/s
and proxy CPU µs per request of each, and the median of the per-round B/A ratios.
A benchmark tool, never a test.
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

from bench import product  # noqa: E402
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
    args = parser.parse_args()
    envs = {
        "A": dict(item.split("=", 1) for item in args.env_a),
        "B": dict(item.split("=", 1) for item in args.env_b),
    }
    proxy_cpu, load_cpu = (None, None) if args.no_pin else (PROXY_CPU, LOAD_CPU)
    print(f"load average {os.getloadavg()[0]:.2f}; pinning {'off' if args.no_pin else 'on'}")
    print(f"A: {args.other} {envs['A']}\nB: {ROOT} {envs['B']}")
    servers: list[Server] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            backend = product.start_backend(load_cpu)
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
            rows: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}
            wrk(gateways["A"].url, tokens["A"], 1, args.connections, load_cpu)  # warm-up
            for number in range(args.rounds):
                for name, gateway in gateways.items():
                    before = cpu_seconds(gateway.proc.pid)
                    rps = wrk(gateway.url, tokens[name], args.duration, args.connections, load_cpu)[
                        "rps"
                    ]
                    used = cpu_seconds(gateway.proc.pid) - before
                    rows[name].append((rps, used / max(rps * args.duration, 1) * 1e6))
                    print(f"round {number + 1} {name}: {rps:,.0f} req/s", flush=True)
        finally:
            for server in reversed(servers):
                server.stop()
    print("\n| tree | req/s (median) | CPU µs/req (median) |\n|---|---|---|")
    for name, results in rows.items():
        rps = statistics.median(r for r, _ in results)
        cpu = statistics.median(c for _, c in results)
        print(f"| {name} | {rps:,.0f} | {cpu:.1f} |")
    ratios = [b[0] / max(a[0], 1) for a, b in zip(rows["A"], rows["B"], strict=True)]
    print(f"B/A req/s, median of per-round ratios: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
