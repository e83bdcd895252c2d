"""An open-loop load generator: a fixed request schedule, latency from the scheduled time.

    python -m bench.openloop URL RATE SECONDS [CONNECTIONS] [AUTHORIZATION]

Request i is due at start + i / RATE whatever happened to the ones before it (unlike
wrk's closed loop, a slow response cannot slow the offered load down). A due request
goes out on an idle keep-alive connection, or waits for the next one to free up, so
queueing shows in its latency (no coordinated omission). Two latencies per request:
`scheduled` (due time → response end, what a user sees) and `service` (bytes written →
response end). The first half second is warm-up and not recorded.

Prints one JSON object: offered and achieved rate, errors, p50/p99 of both latencies
(ms) and `late_p99_ms`, how late the generator itself sent (a saturated generator shows
here: then lower the rate for every target).
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


class Connection(asyncio.Protocol):
    def __init__(self, load: Load) -> None:
        self.load = load
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.BaseTransport | None = None
        self.due = 0.0
        self.sent = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.replace(self)

    def send(self, due: float) -> None:
        self.due = due
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
        self.waiting: deque[float] = deque()
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
            self.dispatch(conn, self.waiting.popleft(), time.perf_counter())
        else:
            self.idle.append(conn)

    def finished(self, conn: Connection, status: int) -> None:
        now = time.perf_counter()
        if status != 200:
            self.errors += 1
        if conn.due >= self.start + WARMUP:
            self.scheduled.append(now - conn.due)
            self.service.append(now - conn.sent)
        if self.waiting:
            self.dispatch(conn, self.waiting.popleft(), now)
        else:
            self.idle.append(conn)
            if self.stopped and len(self.idle) == self.connections:
                self.drained.set()

    def dispatch(self, conn: Connection, due: float, now: float) -> None:
        if due >= self.start + WARMUP:
            self.late.append(now - due)
        conn.send(due)

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
                if self.idle:
                    self.dispatch(self.idle.popleft(), due, now)
                else:
                    self.waiting.append(due)
            await asyncio.sleep(max(0.0, self.start + index / self.rate - time.perf_counter()))
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
        "p50_ms": pct(load.scheduled, 0.50),
        "p99_ms": pct(load.scheduled, 0.99),
        "service_p50_ms": pct(load.service, 0.50),
        "service_p99_ms": pct(load.service, 0.99),
        "late_p99_ms": pct(load.late, 0.99),
        "mean_ms": statistics.fmean(load.scheduled) * 1000 if load.scheduled else float("nan"),
    }


if __name__ == "__main__":
    target, offered, duration = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    conns = int(sys.argv[4]) if len(sys.argv) > 4 else 32
    authorization = sys.argv[5] if len(sys.argv) > 5 else ""
    result = uvloop.run(main(target, offered, min(duration, 8.0), conns, authorization))
    print(json.dumps(result))
