"""Run the gateway under uvicorn: our TLS context, the optional redirect listener."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from starlette.types import ASGIApp

from gateway.app import Gateway, create_app
from gateway.edge import ConnectionLimiter, EdgeLimits
from gateway.http_protocol import CorkedHttpToolsProtocol, edge_protocol, fast_proxy_protocol
from gateway.net import is_trusted, parse_networks
from gateway.observability.connections import observed_protocol
from gateway.observability.listener import MetricsListener
from gateway.observability.multiprocess import in_worker_pool, leave_with_supervisor
from gateway.ratelimit import limit_key
from gateway.settings import Settings
from gateway.tls import HSTSMiddleware, ReloadingTLS, serve_uvicorn

if TYPE_CHECKING:
    from gateway.acme import AcmeEvents, CertificateManager

log = logging.getLogger("gateway")


def run(settings: Settings, sockets: Sequence[socket.socket] = ()) -> None:
    # uvloop here, not via uvicorn's `loop=` option: that option only applies when uvicorn
    # creates the loop itself. It also sets TCP_NODELAY on accepted sockets; the stdlib
    # loop skips it for uvicorn's sockets (created with proto 0), so every keep-alive
    # response written in two parts waited ~40 ms for a delayed ACK.
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve(settings, sockets))


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed (it is declared for every platform but
    Windows); None, the standard library's loop, elsewhere."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def serve(
    settings: Settings,
    sockets: Sequence[socket.socket] = (),
    *,
    acme_events: AcmeEvents | None = None,
) -> None:
    """`sockets`: listening sockets made by the workers' supervisor (main, redirect);
    `acme_events` receives certificate events (default: the metrics' certificate counter
    when metrics are on, else plain counters)."""
    gateway = create_app(settings)
    app: ASGIApp = gateway.asgi()
    tls = None
    https_headers: list[tuple[bytes, bytes]] = []
    acme = _acme_manager(settings, acme_events or _acme_metrics(gateway))
    if settings.https_enabled and (acme is not None or (settings.cert_file and settings.key_file)):
        tls = _listener_tls(settings, acme)
        if settings.hsts:
            hsts = HSTSMiddleware(app)
            app, https_headers = hsts, [hsts.header]
    limits = settings.edge
    _raise_file_limit(limits)
    proxies = parse_networks(settings.trusted_proxies)

    def address_key(address: str) -> str | None:
        # A trusted reverse proxy carries every client's connections: total cap only.
        return None if is_trusted(address, proxies) else limit_key(address)

    admission = ConnectionLimiter(
        limits.max_connections_per_address, limits.max_connections, key=address_key
    )
    protocol: type[CorkedHttpToolsProtocol]
    if settings.fast_path:
        # Bodyless proxied requests are served inside the protocol, the rest through `app`.
        protocol = fast_proxy_protocol(
            gateway.fast_handler(), gateway.proxies, https_headers=https_headers,
            limits=limits, admission=admission,
        )  # fmt: skip
    else:  # MCP_GATEWAY_FAST_PATH=off: every request through the ASGI app
        protocol = edge_protocol(limits, admission)
    if gateway.observer is not None:
        protocol = observed_protocol(protocol, gateway.observer)
    listener = await _metrics_listener(settings, gateway)
    orphan_watch = asyncio.create_task(leave_with_supervisor()) if in_worker_pool() else None
    log.info("memory-gateway %s -> %s", settings.issuer, settings.upstream)
    await serve_uvicorn(
        app,
        settings.host,
        settings.port,
        tls,
        redirect_port=settings.http_redirect_port if tls is not None else None,
        challenges=acme.challenge if acme is not None else None,
        background=acme.run if acme is not None else None,
        http=protocol,
        redirect_protocol=edge_protocol(limits, admission),
        loop="asyncio" if loop_factory() is None else "uvloop",
        lifespan="on",
        access_log=False,
        log_level=settings.log_level,
        timeout_keep_alive=limits.keepalive_timeout,
        server_header=False,
        proxy_headers=False,
        # Operations: uvicorn's lines through our log setup, drain limit, shared sockets.
        log_config=None,
        timeout_graceful_shutdown=drain_budget(settings.drain_seconds),
        sockets=list(sockets),
    )
    if orphan_watch is not None:
        orphan_watch.cancel()
    if listener is not None:
        await listener.close()


def drain_budget(seconds: float) -> float:
    """How long uvicorn waits for in-flight requests after SIGTERM: the drain limit less
    the time the rest of the shutdown takes (closing pools and the store)."""
    return max(seconds - 1.0, seconds / 2)


async def _metrics_listener(settings: Settings, gateway: Gateway) -> MetricsListener | None:
    metrics = gateway.observer.metrics if gateway.observer is not None else None
    if settings.metrics_addr is None or metrics is None or in_worker_pool():
        return None  # several workers: the supervisor serves every worker's metrics
    host, port = settings.metrics_addr
    listener = MetricsListener(metrics.registry, host, port)
    await listener.start()
    log.info("metrics on http://%s:%d/metrics", host, listener.port)
    return listener


def _acme_manager(settings: Settings, events: AcmeEvents | None) -> CertificateManager | None:
    """With MCP_ACME_DOMAINS: the certificate manager, its placeholder ready to serve."""
    if not settings.acme_enabled:
        return None
    from gateway.acme import AcmeCounters, build_manager

    manager = build_manager(settings, events if events is not None else AcmeCounters())
    manager.prepare()
    return manager


def _acme_metrics(gateway: Gateway) -> AcmeEvents | None:
    """Certificate events counted in mcp_gateway_certificate_events_total{event=...}."""
    metrics = gateway.observer.metrics if gateway.observer is not None else None
    if metrics is None:
        return None
    from gateway.acme import AcmeCounters

    return AcmeCounters(forward=metrics.certificate)


def _listener_tls(settings: Settings, acme: CertificateManager | None) -> ReloadingTLS:
    if acme is None:
        assert settings.cert_file is not None
        assert settings.key_file is not None
        return ReloadingTLS(settings.cert_file, settings.key_file)
    tls = ReloadingTLS(acme.store.certificate_path, acme.store.certificate_path)
    acme.attach(tls)
    return tls


def _raise_file_limit(limits: EdgeLimits) -> None:
    """Lift the soft descriptor limit toward the hard one, so MCP_GATEWAY_MAX_CONNECTIONS
    (plus upstream connections and files) fits; warn when it cannot."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * limits.max_connections + 256  # a client and an upstream socket each
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    if soft != resource.RLIM_INFINITY and soft < limits.max_connections + 256:
        log.warning(
            "the open-file limit (%d) is below MCP_GATEWAY_MAX_CONNECTIONS (%d) + 256: "
            "raise it (ulimit -n) or lower the setting",
            soft,
            limits.max_connections,
        )
