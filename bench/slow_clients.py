"""slowhttptest against `memory-gateway serve` on loopback: slowloris, slow body, slow read.

    apt-get install -y slowhttptest                 # Debian
    uv run python bench/slow_clients.py [--seconds 60] [--connections 2000]

A benchmark, not a test. For each attack (one after the other, `--seconds` each) it
prints: the connections slowhttptest held open at most (its own CSV), the gateway's open
sockets at most (from /proc), a bystander's latency p50 / max and its errors (a fresh
connection from 127.0.0.2 every 0.1 s, GET /api/memories with a token obtained from the
gateway), and the gateway's RSS before and after. Loopback only; every run is bounded by
slowhttptest's `-l`, plus a hard timeout.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import product  # noqa: E402
from tests.proxy.conftest import Server  # noqa: E402

BYSTANDER = "127.0.0.2"


def attacks(port: int, connections: int, seconds: int) -> dict[str, list[str]]:
    base = f"http://127.0.0.1:{port}"
    common = ["-c", str(connections), "-r", "200", "-p", "3", "-l", str(seconds), "-g"]
    slow_read = ["-X", "-w", "512", "-y", "1024", "-n", "5", "-z", "32", "-k", "10"]
    return {
        "slowloris (-H)": ["-H", "-i", "5", "-x", "24", "-u", f"{base}/api/memories"],
        "slow body (-B)": ["-B", "-i", "5", "-x", "10", "-s", "8192", "-u", f"{base}/oauth/token"],
        "slow read (-X)": [*slow_read, "-u", f"{base}/healthz"],
        "": common,
    }


def open_sockets(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd).startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


class Bystander(threading.Thread):
    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url, self.token = url, token
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        headers = {"Authorization": self.token}  # "Bearer ..."
        # A new connection for every request (no keep-alive): each one is accepted and
        # parsed while the attack holds its connections.
        limits = httpx.Limits(max_keepalive_connections=0)
        transport = httpx.HTTPTransport(local_address=BYSTANDER, limits=limits)
        with httpx.Client(transport=transport, timeout=10) as http:
            while not self.stop.wait(0.1):
                start = time.monotonic()
                try:
                    status = http.get(self.url, headers=headers).status_code
                    if status != 200:
                        self.errors.append(f"status {status}")
                except httpx.HTTPError as exc:
                    self.errors.append(type(exc).__name__)
                self.latencies.append((time.monotonic() - start) * 1000)


def run_attack(
    name: str, args: list[str], gateway: Server, token: str, out: Path, seconds: int
) -> dict[str, object]:
    before = gateway.rss_kib() / 1024
    bystander = Bystander(f"http://127.0.0.1:{gateway.port}/api/memories", token)
    bystander.start()
    prefix = out / name.split()[0]
    command = ["slowhttptest", *args, "-o", str(prefix)]
    began = time.monotonic()
    log = prefix.with_suffix(".log").open("wb")
    attack = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    most_sockets = 0
    deadline = time.monotonic() + seconds + 30
    while attack.poll() is None and time.monotonic() < deadline:
        most_sockets = max(most_sockets, open_sockets(gateway.proc.pid))
        time.sleep(1)
    if attack.poll() is None:
        attack.kill()
    attack.wait()
    log.close()
    lasted = time.monotonic() - began
    text = prefix.with_suffix(".log").read_text(errors="replace")
    ended = text.rsplit("Exit status:", 1)[-1].split("\n", 1)[0] if "Exit status:" in text else ""
    ended = "".join(c for c in ended if c.isprintable()).replace("[1;36m", "").strip()
    bystander.stop.set()
    bystander.join(15)
    after = gateway.rss_kib() / 1024
    held = 0
    csv_file = prefix.with_suffix(".csv")
    if csv_file.exists():
        with csv_file.open() as handle:
            for row in csv.DictReader(handle):
                held = max(held, int(float(row.get("connected", row.get("Connected", 0)) or 0)))
    latencies = sorted(bystander.latencies)
    return {
        "attack": name,
        "lasted": lasted,
        "ended": ended or f"exit {attack.returncode}",
        "held": held,
        "sockets": most_sockets,
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "max": latencies[-1] if latencies else float("nan"),
        "requests": len(latencies),
        "errors": len(bystander.errors),
        "rss": (before, after),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument(
        "--connections",
        type=int,
        default=None,
        help="default: 200 a second for the whole run, so the attack never runs dry",
    )
    options = parser.parse_args()
    if options.connections is None:
        options.connections = 200 * options.seconds
    if shutil.which("slowhttptest") is None:
        raise SystemExit("slowhttptest is missing: apt-get install -y slowhttptest")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at start")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        backend = product.start_backend(None)
        gateway = product.start_gateway(backend.url, out, cpus=None)
        try:
            token = product.oauth_token(f"http://127.0.0.1:{gateway.port}", "read")
            modes = attacks(gateway.port, options.connections, options.seconds)
            common = modes.pop("")
            rows = []
            for name, args in modes.items():
                rows.append(run_attack(name, args + common, gateway, token, out, options.seconds))
                print(f"{name} done; load average {os.getloadavg()[0]:.2f}", flush=True)
        finally:
            gateway.stop()
            backend.stop()
    print(
        f"\n| attack ({options.connections} connections, {options.seconds} s) "
        "| held by slowhttptest (max) | gateway sockets (max) | bystander p50 / max ms "
        "| bystander requests / errors | gateway RSS before → after MiB | ran s "
        "| slowhttptest's verdict |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        before, after = row["rss"]  # type: ignore[misc]
        print(
            f"| {row['attack']} | {row['held']} | {row['sockets']} "
            f"| {row['p50']:.1f} / {row['max']:.1f} | {row['requests']} / {row['errors']} "
            f"| {before:.0f} → {after:.0f} | {row['lasted']:.0f} | {row['ended']} |"
        )
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at end")


if __name__ == "__main__":
    main()
