"""`serve --workers N`: N gateway processes on one port.

The supervisor binds the listening sockets (the main port and, with HTTPS, the redirect
port) once and starts N workers, each a plain `memory-gateway serve` that inherits the
sockets (MCP_GATEWAY_LISTEN_FDS) instead of binding its own; the kernel hands each new
connection to whichever worker accepts it first. Workers share everything through the
state they already share as replicas: the signing keys in the state directory (created
under a file lock by whichever starts first) or MCP_OAUTH_SECRET_KEY, and the OAuth
store (SQLite in WAL mode, or Redis). Revocations reach the other workers with the
revocation cache's reload (every 0.5 s).

The supervisor restarts a worker that dies, forwards SIGTERM/SIGINT to every worker and
waits for them to drain (MCP_GATEWAY_DRAIN_SECONDS, plus a second), then kills what is
left. With MCP_GATEWAY_METRICS_ADDR it serves the metrics of all workers together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from gateway.observability.listener import MetricsListener
from gateway.observability.multiprocess import MULTIPROC_ENV, WORKER_ENV
from gateway.settings import Settings

log = logging.getLogger("gateway.workers")
LISTEN_FDS_ENV = "MCP_GATEWAY_LISTEN_FDS"
RESTART_DELAY = 1.0
# A worker that dies this soon after starting, this many times in a row, stops the gateway
# (a configuration that cannot start would otherwise be restarted forever).
EARLY_EXIT_SECONDS = 5.0
EARLY_EXIT_LIMIT = 3


def inherited_sockets(env: Mapping[str, str]) -> list[socket.socket]:
    """The listening sockets a worker was given by its supervisor (none otherwise)."""
    value = env.get(LISTEN_FDS_ENV, "")
    return [socket.socket(fileno=int(fd)) for fd in value.split(",") if fd.strip()]


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class Supervisor:
    def __init__(self, settings: Settings, env: Mapping[str, str]) -> None:
        self.settings = settings
        self.count = settings.workers
        self.sockets = [bind(settings.host, settings.port)]
        if settings.https_enabled and settings.http_redirect_port is not None:
            self.sockets.append(bind(settings.host, settings.http_redirect_port))
        self.metrics_dir = Path(tempfile.mkdtemp(prefix="mgw-metrics-"))
        fds = ",".join(str(s.fileno()) for s in self.sockets)
        self.env = {
            **env,
            "MCP_GATEWAY_WORKERS": "1",
            LISTEN_FDS_ENV: fds,
            WORKER_ENV: str(os.getpid()),
            MULTIPROC_ENV: str(self.metrics_dir),
        }
        self.workers: dict[int, subprocess.Popen[bytes]] = {}
        self.stopping = False
        self.early_exits = 0
        self.exit_code = 0

    def spawn(self) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "gateway", "serve"]
        process = subprocess.Popen(  # noqa: S603
            command, env=self.env, pass_fds=[s.fileno() for s in self.sockets]
        )
        self.workers[process.pid] = process
        return process

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        listener = await self._metrics()
        log.info("memory-gateway: %d workers on %s:%d", self.count, self.settings.host, self.port)
        started = {self.spawn().pid: time.monotonic() for _ in range(self.count)}
        try:
            while not self.stopping or self.workers:
                await asyncio.sleep(0.2)
                for pid, process in list(self.workers.items()):
                    code = process.poll()
                    if code is None:
                        continue
                    del self.workers[pid]
                    self._forget(pid)
                    if self.stopping:
                        continue
                    lived = time.monotonic() - started.pop(pid, 0.0)
                    self.early_exits = self.early_exits + 1 if lived < EARLY_EXIT_SECONDS else 0
                    if self.early_exits >= EARLY_EXIT_LIMIT:
                        log.error("workers keep exiting at start-up (code %s): stopping", code)
                        self.exit_code = code or 1
                        self.stop()
                        continue
                    log.warning("worker %d exited with code %s: restarting it", pid, code)
                    await asyncio.sleep(RESTART_DELAY)
                    if not self.stopping:
                        started[self.spawn().pid] = time.monotonic()
        finally:
            if listener is not None:
                await listener.close()
            for sock in self.sockets:
                sock.close()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        return self.exit_code

    @property
    def port(self) -> int:
        return int(self.sockets[0].getsockname()[1])

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        for process in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        asyncio.get_running_loop().call_later(self.settings.drain_seconds + 1.0, self._kill)

    def _kill(self) -> None:
        for process in self.workers.values():
            if process.poll() is None:
                log.error("worker %d did not drain in time: killed", process.pid)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()

    def _forget(self, pid: int) -> None:
        from prometheus_client import multiprocess

        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]

    async def _metrics(self) -> MetricsListener | None:
        if self.settings.metrics_addr is None:
            return None
        from prometheus_client import CollectorRegistry, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(self.metrics_dir))  # type: ignore[no-untyped-call]
        host, port = self.settings.metrics_addr
        listener = MetricsListener(registry, host, port)
        await listener.start()
        log.info("metrics of every worker on http://%s:%d/metrics", host, listener.port)
        return listener


def supervise(settings: Settings, env: Mapping[str, str]) -> int:
    supervisor = Supervisor(settings, env)
    return asyncio.run(supervisor.run())
