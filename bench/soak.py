"""Soak: mixed OAuth and proxied traffic at half the measured peak, for minutes, with a
slow-client attack running beside it, against `memory-gateway serve` on loopback.

    apt-get install -y slowhttptest                 # Debian
    uv run python bench/soak.py [--minutes 5] [--warmup 60] [--attack-connections 1000]

A benchmark, not a test. Steps: (1) measure the peak of the mix, closed loop (32
keep-alive connections, 10 s, this same client); (2) run the mix open loop at half that
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
import base64
import json
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
from collections import deque
from pathlib import Path

import httptools
import httpx
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import product  # noqa: E402

LEGIT = "127.0.0.3"
CONNECTIONS = 32
MCP_CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}


def requests(host: str, token: str, client_id: str, secret: str) -> list[tuple[float, bytes]]:
    """(cumulative share, request bytes) of the mix, built once."""
    call = json.dumps(MCP_CALL).encode()
    form = b"grant_type=client_credentials&scope=read"
    basic = base64.b64encode(f"{client_id}:{secret}".encode())
    head = f"Host: {host}\r\n".encode()
    return [
        (0.7, b"GET /api/memories HTTP/1.1\r\n" + head
         + f"Authorization: {token}\r\n\r\n".encode()),
        (0.8, b"POST /mcp HTTP/1.1\r\n" + head + f"Authorization: {token}\r\n".encode()
         + b"Content-Type: application/json\r\nAccept: application/json\r\n"
         + b"Content-Length: %d\r\n\r\n" % len(call) + call),
        (0.9, b"POST /oauth/token HTTP/1.1\r\n" + head + b"Authorization: Basic " + basic
         + b"\r\nContent-Type: application/x-www-form-urlencoded\r\n"
         + b"Content-Length: %d\r\n\r\n" % len(form) + form),
        (1.0, b"GET /.well-known/oauth-authorization-server HTTP/1.1\r\n" + head + b"\r\n"),
    ]  # fmt: skip


class Conn(asyncio.Protocol):
    """One keep-alive connection of the legitimate client (raw, httptools-parsed: the
    client must not be the bottleneck it would be with a high-level library)."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.started = 0.0
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.load.errors.append(f"unparsable response: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.lost(self)

    def send(self, request: bytes, started: float) -> None:
        self.busy, self.started = True, started
        assert self.transport is not None
        self.transport.write(request)

    def on_message_complete(self) -> None:
        self.busy = False
        self.load.finished(self, self.parser.get_status_code())


class Load:
    """Open loop (request i due at start + i / rate; a due request waits for an idle
    connection, and its wait counts in its latency) or closed loop (rate None)."""

    def __init__(self, mix: list[tuple[float, bytes]], port: int, connections: int) -> None:
        self.mix, self.port, self.size = mix, port, connections
        self.idle: deque[Conn] = deque()
        self.waiting: deque[float] = deque()
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.done = 0
        self.closed_loop = False
        self.stopped = False
        self.reconnects: set[asyncio.Future[None]] = set()

    def pick(self) -> bytes:
        roll = random.random()
        return next(request for share, request in self.mix if roll < share)

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            lambda: Conn(self), "127.0.0.1", self.port, local_addr=(LEGIT, 0)
        )
        self.idle.append(conn)

    def lost(self, conn: Conn) -> None:
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.busy:
            self.errors.append("connection closed with a request in flight")
        if not self.stopped:
            task = asyncio.ensure_future(self.connect())
            self.reconnects.add(task)
            task.add_done_callback(self.reconnects.discard)

    def finished(self, conn: Conn, status: int) -> None:
        now = time.monotonic()
        self.done += 1
        self.latencies.append(now - conn.started)
        if status != 200:
            self.errors.append(f"status {status}")
        if self.stopped:
            self.idle.append(conn)
        elif self.closed_loop:
            conn.send(self.pick(), now)
        elif self.waiting:
            conn.send(self.pick(), self.waiting.popleft())
        else:
            self.idle.append(conn)

    async def run(self, rate: float | None, seconds: float) -> float:
        await asyncio.gather(*(self.connect() for _ in range(self.size)))
        start = time.monotonic()
        end, sent = start + seconds, 0
        if rate is None:
            self.closed_loop = True
            while self.idle:
                self.idle.popleft().send(self.pick(), start)
            await asyncio.sleep(seconds)
        else:
            while (now := time.monotonic()) < end:
                while (due := start + sent / rate) <= now:
                    sent += 1
                    if self.idle:
                        self.idle.popleft().send(self.pick(), due)
                    else:
                        self.waiting.append(due)
                await asyncio.sleep(0.001)
        self.stopped = True
        elapsed = time.monotonic() - start
        for _ in range(300):  # let the last responses arrive (3 s at most)
            if len(self.idle) >= self.size and not self.waiting:
                break
            await asyncio.sleep(0.01)
        if self.waiting:
            self.errors.append(f"{len(self.waiting)} requests never sent")
        return self.done / elapsed


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
    parser.add_argument("--no-attack", action="store_true", help="the traffic alone (baseline)")
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
            mix = requests(f"127.0.0.1:{gateway.port}", token, cid, secret)
            probe = Load(mix, gateway.port, CONNECTIONS)
            measured = uvloop.run(probe.run(None, 10))
            print(f"peak of the mix (closed loop, {CONNECTIONS} connections): "
                  f"{measured:,.0f} req/s, errors {len(probe.errors)}", flush=True)  # fmt: skip
            rate = measured / 2
            length = str(int(seconds + 30))
            common = ["-c", str(options.attack_connections), "-r", "100", "-l", length, "-p", "3"]
            for mode in (
                ()
                if options.no_attack
                else (
                    ["-H", "-i", "5", "-x", "24", "-u", f"{base}/api/memories"],
                    ["-B", "-i", "5", "-x", "10", "-s", "8192", "-u", f"{base}/oauth/token"],
                )
            ):
                attackers.append(
                    subprocess.Popen(
                        ["slowhttptest", *mode, *common],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            if not options.no_attack:
                pipeliner.start()
            samples: list[tuple[float, float]] = []
            stop = threading.Event()
            sampler = threading.Thread(
                target=rss_sampler, args=(gateway.proc.pid, samples, stop), daemon=True
            )
            sampler.start()
            load = Load(mix, gateway.port, CONNECTIONS)
            start = time.monotonic()
            achieved = uvloop.run(load.run(rate, seconds))
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
    latencies = sorted(load.latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else float("nan")
    beside = (
        "nothing beside it"
        if options.no_attack
        else f"slowloris + slow body ({options.attack_connections} connections each) + "
        "one unread pipelining connection beside it"
    )
    print(
        f"\nsoak: {options.minutes:g} min at {rate:,.0f} req/s offered (half the measured "
        f"peak {measured:,.0f}), {beside}"
    )
    print("| figure | value |\n|---|---|")
    print(f"| legitimate requests / errors | {load.done:,} / {len(load.errors)} |")
    print(f"| achieved rate | {achieved:,.0f} req/s |")
    print(f"| latency p50 / p99 | {statistics.median(latencies) * 1000:.1f} / {p99:.1f} ms |")
    if warm:
        growth = (warm[-1] - warm[0]) / warm[0] * 100
        print(f"| RSS after warm-up ({options.warmup:g} s) → end | {warm[0]:.1f} → "
              f"{warm[-1]:.1f} MiB ({growth:+.1f} %) |")  # fmt: skip
        print(f"| RSS peak after warm-up | {max(warm):.1f} MiB "
              f"({(max(warm) - warm[0]) / warm[0] * 100:+.1f} %) |")  # fmt: skip
    print(f"| bytes pipelined unread | {pipeliner.sent / 1024 / 1024:.1f} MiB |")
    if load.errors:
        print("first errors:", load.errors[:5])
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at end")


if __name__ == "__main__":
    main()
