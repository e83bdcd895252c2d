"""Time to first certificate against Pebble on loopback (a measurement, not a test).

    uv run python bench/acme_first_certificate.py [--runs 5]

Each run: a fresh state directory, a fresh Pebble (PEBBLE_VA_NOSLEEP=1) and the loopback
DNS responder from tests/acme, then `python -m gateway serve` with MCP_ACME_DOMAINS.
Reported per run: the manager's own figure (order placed to certificate written, from
its log line) and process start to the first handshake that verifies against Pebble's
root. Prints the load average first.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.acme.dns import LoopbackDNS
from tests.acme.gateway_process import acme_env, gateway, wait_for_issued
from tests.acme.pebble import pebble
from tests.ports import reserved_port

NAME = "memory.test"


def one_run(binary: str, root: Path) -> tuple[float, float]:
    https_port, http_port = reserved_port(), reserved_port()
    with (
        LoopbackDNS([NAME]) as dns,
        pebble(binary, root / "pebble", http_port=http_port, dns_port=dns.port) as ca,
    ):
        env = acme_env(root / "state", ca.directory, ca.api_ca, NAME, https_port, http_port)
        with gateway(env, root / "gateway.log") as running:
            wait_for_issued(running, NAME, ca.client_context())
            end_to_end = time.monotonic() - running.started
            found = re.search(r"obtained in ([0-9.]+) s", running.log_text())
            assert found is not None
            return float(found.group(1)), end_to_end


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    binary = shutil.which("pebble")
    if binary is None:
        print("pebble is not installed (apt-get install pebble)", file=sys.stderr)
        return 1
    print("load average:", Path("/proc/loadavg").read_text().strip())
    orders, totals = [], []
    for index in range(args.runs):
        with tempfile.TemporaryDirectory() as directory:
            order, total = one_run(binary, Path(directory))
        orders.append(order)
        totals.append(total)
        print(f"run {index + 1}: order {order:.2f} s, process start to verified handshake "
              f"{total:.2f} s")  # fmt: skip
    print(f"order:  min {min(orders):.2f}  median {statistics.median(orders):.2f}  "
          f"max {max(orders):.2f} s")  # fmt: skip
    print(f"total:  min {min(totals):.2f}  median {statistics.median(totals):.2f}  "
          f"max {max(totals):.2f} s")  # fmt: skip
    print("load average:", Path("/proc/loadavg").read_text().strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
