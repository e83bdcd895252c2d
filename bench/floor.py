"""The floor of the stack: what the least possible uvloop + httptools proxy costs per request.

    uv run python bench/floor.py [--rounds 3] [--duration 4] [--no-pin]

The proxy-bound targets compare the gateway's CPU per request with nginx's. This puts a
third proxy beside them: a minimal one in Python on the gateway's own stack (uvloop
transports, httptools parsers, one protocol callback per parser event), which parses
each request, forwards it with one header added over a keep-alive upstream connection
of its own, parses the response and writes it back with its head rebuilt. No token, no
policy, no header rules, no pool, no timeouts, no log: it is not a proxy anyone should
run, only the lowest figure a Python proxy on this stack can reach on this machine.
The gateway's CPU per request minus this floor is what its own pipeline costs; the
floor minus nginx's is what Python and the event loop cost before any of it.

Same method as bench/proxybound.py: the static nginx upstream, `wrk -t1 -c20` GET
/api/memories, the proxies pinned to CPU 0 and wrk and the upstream to CPU 1 (unless
`--no-pin`), interleaved rounds (`proxybound.measure`), CPU from /proc. A benchmark
tool, never a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httptools  # noqa: E402
import uvloop  # noqa: E402

from tests.proxy.conftest import Server  # noqa: E402

HOP_BY_HOP = frozenset({b"connection", b"keep-alive"})
WORKLOAD = "GET /api/memories"  # the floor forwards no request body


class _Upstream(asyncio.Protocol):
    """The floor's connection to the upstream: parses responses, writes them back."""

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.client.upstream_ready(self)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        head = [b"HTTP/1.1 %d OK\r\n" % self.parser.get_status_code()]
        for name, value in self.headers:
            if name.lower() not in HOP_BY_HOP:
                head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        self.client.write(b"".join(head) + b"".join(self.body))
        self.headers, self.body = [], []


class _Client(asyncio.Protocol):
    """One client connection of the floor, with its own upstream connection."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.waiting: list[bytes] = []
        self.connecting: asyncio.Task[object] | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        connect = loop.create_connection(lambda: _Upstream(self), "127.0.0.1", self.upstream_port)
        self.connecting = loop.create_task(connect)

    def upstream_ready(self, upstream: _Upstream) -> None:
        self.upstream = upstream.transport
        for request in self.waiting:
            upstream.transport.write(request)  # type: ignore[union-attr]
        self.waiting = []

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_message_complete(self) -> None:
        head = [b"%s %s HTTP/1.1\r\n" % (self.parser.get_method(), self.url)]
        for name, value in self.headers:
            head += (name, b": ", value, b"\r\n")
        head.append(b"x-auth-subject: bench\r\n\r\n")
        self.headers = []
        request = b"".join(head)
        if self.upstream is None:
            self.waiting.append(request)
        else:
            self.upstream.write(request)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


async def serve(port: int, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(upstream_port), "127.0.0.1", port)
    await server.serve_forever()


def measure(args: argparse.Namespace) -> None:
    from bench import proxybound
    from bench.product import oauth_token, pinned, start_gateway
    from bench.run import LOAD_CPU, PROXY_CPU, keep, start_nginx
    from tests.ports import reserved_port
    from tests.proxy.conftest import wait_listening

    proxy_cpu, load_cpu = (None, None) if args.no_pin else (PROXY_CPU, LOAD_CPU)
    pinning = "off" if args.no_pin else "on"
    print(f"load average {os.getloadavg()[0]:.2f} at start; pinning {pinning}")
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        servers: list[Server] = []
        try:
            static = keep(servers, proxybound.start_static(tmp, load_cpu))
            port = reserved_port()
            command = [sys.executable, __file__, "serve", str(port), str(static.port)]
            proc = subprocess.Popen(pinned(proxy_cpu, command))
            wait_listening(port, proc)
            floor = keep(servers, Server(port, proc))
            gateway = keep(servers, start_gateway(static.url, tmp, cpus=proxy_cpu))
            token = oauth_token(gateway.url, "read")
            nginx = keep(servers, start_nginx(tmp, static.port, None, proxy_cpu, name="bound"))
            targets = {
                "nginx": (nginx.url, pid(nginx)),
                "floor (uvloop + httptools)": (floor.url, pid(floor)),
                "gateway": (gateway.url, pid(gateway)),
            }
            measured = proxybound.measure(targets, token, tmp, args, load_cpu, [WORKLOAD])
        finally:
            for server in reversed(servers):
                server.stop()
    print(f"\nload average {os.getloadavg()[0]:.2f} at end\n")
    print("| GET /api/memories, proxy-bound | req/s (median) | CPU µs/req (median) | CPU x nginx |")
    print("|---|---|---|---|")
    results = measured[WORKLOAD]
    base = statistics.median(r["cpu_us"] for r in results["nginx"])
    for name, runs in results.items():
        cpu = statistics.median(r["cpu_us"] for r in runs)
        rps = statistics.median(r["rps"] for r in runs)
        flag = " (errors!)" if any(r["non2xx"] for r in runs) else ""
        print(f"| {name} | {rps:,.0f}{flag} | {cpu:.1f} | {cpu / base:.2f} |")


def pid(server: Server) -> int:
    assert server.proc is not None
    return server.proc.pid


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        uvloop.run(serve(int(sys.argv[2]), int(sys.argv[3])))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=4)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--no-pin", action="store_true")
    measure(parser.parse_args())


if __name__ == "__main__":
    main()
