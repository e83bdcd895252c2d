"""An open-loop load generator: a fixed request schedule, latency from the scheduled time.

    python -m bench.openloop URL RATE SECONDS [CONNECTIONS] [AUTHORIZATION]

Request i is due at start + i / RATE whatever happened to the ones before it (unlike
wrk's closed loop, a slow response cannot slow the offered load down). A due request
goes out on an idle keep-alive connection, or waits for the next one to free up, so
queueing shows in its latency (no coordinated omission). The first half second is
warm-up and not recorded.

The generator wakes at most once a millisecond (it never spins: on a 2-CPU machine a
spinning generator takes the CPU the servers need) and sends every request that fell
due since, so arrivals come in per-millisecond batches, the same for every target.
Three latencies per request, each to the end of the response:

- `p50_ms` / `p99_ms`: from the moment the generator picked the request up (its wake-up),
  i.e. queueing for a connection + the server's time: what the server adds;
- `scheduled_*`: from the due time, which also includes the generator's own lateness;
- `service_*`: from the bytes being written.

`gen_late_p99_ms` is how late the generator itself woke for due requests: the run is
valid only while that stays small (a saturated generator shows there, not in the
server's latency).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import time
from collections import deque
from urllib.parse import urlsplit

import httptools
import uvloop

WARMUP = 0.5
MIN_SLEEP = 0.001  # uvloop timers have millisecond resolution; shorter sleeps spin


class Connection(asyncio.Protocol):
    def __init__(self, load: Load) -> None:
        self.load = load
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.BaseTransport | None = None
        self.due = 0.0
        self.picked = 0.0
        self.sent = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.replace(self)

    def send(self, due: float, picked: float) -> None:
        self.due, self.picked = due, picked
        self.sent = time.perf_counter()
        self.transport.write(self.load.request)  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        self.load.finished(self, self.parser.get_status_code())


class Load:
    def __init__(self, request: bytes, rate: float, seconds: float) -> None:
        self.request = request
        self.rate = rate
        self.seconds = seconds
        self.idle: deque[Connection] = deque()
        self.waiting: deque[tuple[float, float]] = deque()
        self.picked: list[float] = []
        self.scheduled: list[float] = []
        self.service: list[float] = []
        self.late: list[float] = []
        self.errors = 0
        self.lost = 0
        self.start = 0.0
        self.connections = 0
        self.stopped = False
        self.drained = asyncio.Event()
        self.reconnects: set[asyncio.Future[None]] = set()
        self.host, self.port = "127.0.0.1", 80

    def replace(self, conn: Connection) -> None:
        """A connection the server closed: count it, and open a new one."""
        self.lost += 1
        if conn in self.idle:
            self.idle.remove(conn)
        else:
            self.errors += 1  # its request got no response
        if not self.stopped:
            self.reconnects.add(asyncio.ensure_future(self.reconnect()))

    async def reconnect(self) -> None:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: Connection(self), self.host, self.port)
        if self.waiting:
            conn.send(*self.waiting.popleft())
        else:
            self.idle.append(conn)

    def finished(self, conn: Connection, status: int) -> None:
        now = time.perf_counter()
        if status != 200:
            self.errors += 1
        if conn.due >= self.start + WARMUP:
            self.picked.append(now - conn.picked)
            self.scheduled.append(now - conn.due)
            self.service.append(now - conn.sent)
        if self.waiting:
            conn.send(*self.waiting.popleft())
        else:
            self.idle.append(conn)
            if self.stopped and len(self.idle) == self.connections:
                self.drained.set()

    async def run(self) -> None:
        self.start = time.perf_counter()
        end = self.start + self.seconds
        index = 0
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            while (due := self.start + index / self.rate) <= now:
                index += 1
                if due >= self.start + WARMUP:
                    self.late.append(now - due)
                if self.idle:
                    self.idle.popleft().send(due, now)
                else:
                    self.waiting.append((due, now))
            wait = self.start + index / self.rate - time.perf_counter()
            await asyncio.sleep(max(MIN_SLEEP, wait))
        self.stopped = True
        if len(self.idle) < self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.drained.wait(), 2.0)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def main(url: str, rate: float, seconds: float, connections: int, auth: str) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
    if auth:
        head += f"Authorization: {auth}\r\n"
    load = Load((head + "\r\n").encode(), rate, seconds)
    load.host, load.port = host, port
    loop = asyncio.get_running_loop()
    for _ in range(connections):
        _, conn = await loop.create_connection(lambda: Connection(load), host, port)
        load.idle.append(conn)
    load.connections = connections
    await load.run()
    measured = seconds - WARMUP
    return {
        "offered_rps": rate,
        "achieved_rps": len(load.scheduled) / measured,
        "errors": load.errors,
        "lost_connections": load.lost,
        "p50_ms": pct(load.picked, 0.50),
        "p99_ms": pct(load.picked, 0.99),
        "scheduled_p50_ms": pct(load.scheduled, 0.50),
        "scheduled_p99_ms": pct(load.scheduled, 0.99),
        "service_p50_ms": pct(load.service, 0.50),
        "service_p99_ms": pct(load.service, 0.99),
        "gen_late_p99_ms": pct(load.late, 0.99),
        "mean_ms": statistics.fmean(load.picked) * 1000 if load.picked else float("nan"),
    }


if __name__ == "__main__":
    target, offered, duration = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    conns = int(sys.argv[4]) if len(sys.argv) > 4 else 32
    authorization = sys.argv[5] if len(sys.argv) > 5 else ""
    result = uvloop.run(main(target, offered, min(duration, 8.0), conns, authorization))
    print(json.dumps(result))
