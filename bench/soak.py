"""Soak: mixed OAuth and proxied traffic at half the measured peak, for minutes, with a
slow-client attack running beside it, against `memory-gateway serve` on loopback.

    apt-get install -y slowhttptest                 # Debian
    uv run python bench/soak.py [--minutes 5] [--warmup 60] [--attack-connections 1000]

A benchmark, not a test. Steps: (1) measure the peak of the mix, closed loop (64
concurrent requests, 10 s, this same client); (2) run the mix open loop at half that
rate for `--minutes`, while slowhttptest runs slowloris and slow body (from 127.0.0.1)
and one raw connection pipelines requests it never reads; the legitimate traffic comes
from 127.0.0.3. The mix: 70 % GET /api/memories (bearer token; the protocol fast path),
10 % POST /mcp tools/list (the ASGI path with JSON-RPC inspection), 10 %
client_credentials grants at /oauth/token, 10 % GET of the authorization server
metadata. It reports every legitimate error (must be zero), achieved rate, latency
p50/p99, and the gateway's RSS after warm-up, at the end and its peak (growth must stay
under 10 %). The OAuth rate limit is raised for the run (it would otherwise answer the
mix's grants with 429 by design; the limiter is not what this measures).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
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

LEGIT = "127.0.0.3"
CONCURRENCY = 64
MCP_CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}


class Mix:
    def __init__(self, base: str, token: str, client_id: str, secret: str) -> None:
        self.base, self.token = base, token
        self.auth = (client_id, secret)
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.done = 0

    async def one(self, http: httpx.AsyncClient, pick: float) -> None:
        start = time.monotonic()
        try:
            if pick < 0.7:
                response = await http.get("/api/memories", headers={"Authorization": self.token})
            elif pick < 0.8:
                response = await http.post(
                    "/mcp",
                    json=MCP_CALL,
                    headers={"Authorization": self.token, "Accept": "application/json"},
                )
            elif pick < 0.9:
                response = await http.post(
                    "/oauth/token",
                    data={"grant_type": "client_credentials", "scope": "read"},
                    auth=self.auth,
                )
            else:
                response = await http.get("/.well-known/oauth-authorization-server")
            if response.status_code != 200:
                self.errors.append(f"{response.request.url.path}: {response.status_code}")
        except httpx.HTTPError as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
        self.latencies.append(time.monotonic() - start)
        self.done += 1


def client(base: str) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(
        local_address=LEGIT, limits=httpx.Limits(max_connections=CONCURRENCY)
    )
    return httpx.AsyncClient(base_url=base, transport=transport, timeout=10)


async def peak(mix: Mix, seconds: float) -> float:
    stop = time.monotonic() + seconds
    async with client(mix.base) as http:

        async def worker() -> None:
            while time.monotonic() < stop:
                await mix.one(http, random.random())

        start = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return mix.done / (time.monotonic() - start)


async def open_loop(mix: Mix, rate: float, seconds: float) -> float:
    """Request i starts at start + i / rate (at most CONCURRENCY in flight; a request
    that finds none free waits, and counts its wait in its latency)."""
    slots = asyncio.Semaphore(CONCURRENCY)
    tasks: set[asyncio.Task[None]] = set()
    async with client(mix.base) as http:

        async def run(pick: float) -> None:
            async with slots:
                await mix.one(http, pick)

        start = time.monotonic()
        sent = 0
        while (now := time.monotonic()) < start + seconds:
            due = int((now - start) * rate) + 1
            while sent < due:
                task = asyncio.create_task(run(random.random()))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)
        return sent / (time.monotonic() - start)


class Pipeliner(threading.Thread):
    """One connection pipelining GET /api/memories and never reading (bounded: 64 MiB
    or the run's end)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.stop, self.sent = port, threading.Event(), 0

    def run(self) -> None:
        batch = b"GET /api/memories HTTP/1.1\r\nHost: x\r\n\r\n" * 1500
        while not self.stop.is_set() and self.sent < 64 * 1024 * 1024:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    while not self.stop.is_set() and self.sent < 64 * 1024 * 1024:
                        try:
                            self.sent += sock.send(batch)
                        except TimeoutError:
                            continue
            except OSError:
                self.stop.wait(1)  # closed by the gateway (send timeout): again


def rss_sampler(pid: int, samples: list[tuple[float, float]], stop: threading.Event) -> None:
    while not stop.wait(2):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    samples.append((time.monotonic(), int(line.split()[1]) / 1024))
        except OSError:
            return


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--warmup", type=float, default=60, help="seconds")
    parser.add_argument("--attack-connections", type=int, default=1000)
    options = parser.parse_args()
    if shutil.which("slowhttptest") is None:
        raise SystemExit("slowhttptest is missing: apt-get install -y slowhttptest")
    seconds = options.minutes * 60
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at start", flush=True)
    os.environ["MCP_OAUTH_RATE_LIMIT_PER_MINUTE"] = "100000000"
    with tempfile.TemporaryDirectory() as tmp:
        backend = product.start_backend(None)
        gateway = product.start_gateway(backend.url, Path(tmp), cpus=None)
        base = f"http://127.0.0.1:{gateway.port}"
        attackers: list[subprocess.Popen[bytes]] = []
        pipeliner = Pipeliner(gateway.port)
        try:
            with httpx.Client(base_url=base, timeout=10) as http:
                registered = http.post(
                    "/oauth/register",
                    headers={"Authorization": f"Bearer {product.REGISTRATION_KEY}"},
                    json={"client_name": "soak", "grant_types": ["client_credentials"],
                          "scope": "read write"},
                )  # fmt: skip
                registered.raise_for_status()
                cid, secret = registered.json()["client_id"], registered.json()["client_secret"]
            token = product.oauth_token(base, "read write")
            probe = Mix(base, token, cid, secret)
            measured = asyncio.run(peak(probe, 10))
            print(f"peak of the mix (closed loop, {CONCURRENCY} in flight): {measured:,.0f} "
                  f"req/s, errors {len(probe.errors)}", flush=True)  # fmt: skip
            rate = measured / 2
            length = str(int(seconds + 30))
            common = ["-c", str(options.attack_connections), "-r", "100", "-l", length, "-p", "3"]
            for mode in (
                ["-H", "-i", "5", "-x", "24", "-u", f"{base}/api/memories"],
                ["-B", "-i", "5", "-x", "10", "-s", "8192", "-u", f"{base}/oauth/token"],
            ):
                attackers.append(
                    subprocess.Popen(
                        ["slowhttptest", *mode, *common],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            pipeliner.start()
            samples: list[tuple[float, float]] = []
            stop = threading.Event()
            sampler = threading.Thread(
                target=rss_sampler, args=(gateway.proc.pid, samples, stop), daemon=True
            )
            sampler.start()
            mix = Mix(base, token, cid, secret)
            start = time.monotonic()
            achieved = asyncio.run(open_loop(mix, rate, seconds))
            stop.set()
            sampler.join(5)
        finally:
            pipeliner.stop.set()
            for attacker in attackers:
                attacker.terminate()
            for attacker in attackers:
                try:
                    attacker.wait(10)
                except subprocess.TimeoutExpired:
                    attacker.kill()
            gateway.stop()
            backend.stop()
    warm = [rss for at, rss in samples if at - start >= options.warmup]
    latencies = sorted(mix.latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else float("nan")
    print(f"\nsoak: {options.minutes:g} min at {rate:,.0f} req/s offered (half the measured "
          f"peak {measured:,.0f}), slowloris + slow body ({options.attack_connections} "
          "connections each) + one unread pipelining connection beside it")  # fmt: skip
    print("| figure | value |\n|---|---|")
    print(f"| legitimate requests / errors | {mix.done:,} / {len(mix.errors)} |")
    print(f"| achieved rate | {achieved:,.0f} req/s |")
    print(f"| latency p50 / p99 | {statistics.median(latencies) * 1000:.1f} / {p99:.1f} ms |")
    if warm:
        growth = (warm[-1] - warm[0]) / warm[0] * 100
        print(f"| RSS after warm-up ({options.warmup:g} s) → end | {warm[0]:.1f} → "
              f"{warm[-1]:.1f} MiB ({growth:+.1f} %) |")  # fmt: skip
        print(f"| RSS peak after warm-up | {max(warm):.1f} MiB "
              f"({(max(warm) - warm[0]) / warm[0] * 100:+.1f} %) |")  # fmt: skip
    print(f"| bytes pipelined unread | {pipeliner.sent / 1024 / 1024:.1f} MiB |")
    if mix.errors:
        print("first errors:", mix.errors[:5])
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at end")


if __name__ == "__main__":
    main()
