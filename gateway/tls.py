"""Server-side TLS: a hardened context, certificate hot reload, HTTPS redirect and HSTS.

Reload without restart: the listening context's SNI callback, which OpenSSL runs on every
ClientHello (with or without a server name), points the connection at the most recently
loaded context. A watcher loads a changed certificate/key pair into a *new* context and
swaps it in only if that worked; a broken pair leaves the old one serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from cryptography import x509
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.http_protocol import CorkedHttpToolsProtocol
from gateway.uvicorn_fence import PassiveServer, bind_socket, loop_factory

logger = logging.getLogger("gateway.tls")

# TLS 1.2 suites with forward secrecy and AEAD only; TLS 1.3 suites are all AEAD.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
ALPN_PROTOCOLS = ("http/1.1",)
DEFAULT_WATCH_INTERVAL = 30.0


def server_context(
    cert_file: Path | str, key_file: Path | str, password: str | None = None
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(list(ALPN_PROTOCOLS))
    context.load_cert_chain(cert_file, key_file, password)
    return context


@dataclass(frozen=True)
class CertInfo:
    serial: int
    not_after: str
    subject: str

    @classmethod
    def read(cls, cert_file: Path) -> CertInfo:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        return cls(
            cert.serial_number, cert.not_valid_after_utc.isoformat(), cert.subject.rfc4514_string()
        )


FileStamp = tuple[int, int, int]  # inode, size, mtime_ns: cheap to poll


class ReloadingTLS:
    """A listening `SSLContext` whose certificate follows the files on disk."""

    def __init__(
        self, cert_file: Path | str, key_file: Path | str, password: str | None = None
    ) -> None:
        self.cert_file, self.key_file = Path(cert_file), Path(key_file)
        self._password = password
        stamps, digest = self._stamps(), self._digest()
        self.context = server_context(self.cert_file, self.key_file, password)
        self.context.sni_callback = self._select
        self._current = self.context
        self.info = CertInfo.read(self.cert_file)
        self._seen_stamps, self._seen_digest, self._served_digest = stamps, digest, digest

    @property
    def current(self) -> ssl.SSLContext:
        return self._current

    def _select(
        self, connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        connection.context = self._current

    def reload(self) -> bool:
        """Load the pair on disk into a new context and serve it; False keeps the old one."""
        stamps, digest = self._stamps(), self._digest()
        self._seen_stamps, self._seen_digest = stamps, digest
        try:
            context = server_context(self.cert_file, self.key_file, self._password)
            info = CertInfo.read(self.cert_file)
        except (OSError, ValueError, ssl.SSLError) as exc:
            logger.error(
                "TLS reload of %s failed, still serving serial %x: %s",
                self.cert_file, self.info.serial, exc,
            )  # fmt: skip
            return False
        self._current, self.info, self._served_digest = context, info, digest
        logger.info(
            "TLS certificate reloaded: serial %x, subject %s, valid until %s",
            info.serial, info.subject, info.not_after,
        )  # fmt: skip
        return True

    def check(self) -> bool | None:
        """Reload if the files changed since last looked at; None when nothing changed."""
        stamps = self._stamps()
        if stamps == self._seen_stamps:
            return None
        digest = self._digest()
        if digest in (self._seen_digest, self._served_digest):
            # Touched or rewritten with the same bytes, or a pair that already failed.
            self._seen_stamps = stamps
            return None
        return self.reload()

    async def run_watcher(self, interval: float = DEFAULT_WATCH_INTERVAL) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.check)
            except Exception:
                logger.exception("TLS certificate watcher error")

    def _stamps(self) -> tuple[FileStamp | None, FileStamp | None]:
        return _stamp(self.cert_file), _stamp(self.key_file)

    def _digest(self) -> str:
        sha = hashlib.sha256()
        for path in (self.cert_file, self.key_file):
            try:
                sha.update(path.read_bytes())
            except OSError:
                sha.update(b"\0missing\0")
        return sha.hexdigest()


def _stamp(path: Path) -> FileStamp | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


class HSTSMiddleware:
    """Add Strict-Transport-Security to responses sent over HTTPS (RFC 6797)."""

    def __init__(
        self, app: ASGIApp, max_age: int = 31_536_000, include_subdomains: bool = False
    ) -> None:
        self.app = app
        value = f"max-age={max_age}" + ("; includeSubDomains" if include_subdomains else "")
        self.header = (b"strict-transport-security", value.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("scheme") != "https":
            await self.app(scope, receive, send)
            return

        async def send_with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if all(name.lower() != self.header[0] for name, _ in headers):
                    headers.append(self.header)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_hsts)


_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?$")


ChallengeLookup = Callable[[str], bytes | None]  # HTTP-01 token -> key authorization
ACME_CHALLENGE_PREFIX = "/.well-known/acme-challenge/"


class HTTPSRedirect:
    """Plain-HTTP app that sends every request to the same host and path over HTTPS.

    With `challenges`, it also answers ACME HTTP-01 validation requests (RFC 8555 8.3).
    """

    def __init__(self, https_port: int, challenges: ChallengeLookup | None = None) -> None:
        self.https_port = https_port
        self.challenges = challenges

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if self.challenges is not None and scope["path"].startswith(ACME_CHALLENGE_PREFIX):
            await self._challenge(scope, send)
            return
        target = self.location(scope)
        status, headers = (308, [(b"location", target.encode())]) if target else (400, [])
        headers.append((b"content-length", b"0"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def _challenge(self, scope: Scope, send: Send) -> None:
        assert self.challenges is not None
        token = scope["path"][len(ACME_CHALLENGE_PREFIX) :]
        answer = self.challenges(token)  # a small local file: no worker thread to hog
        status, body = (200, answer) if answer is not None else (404, b"")
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    def location(self, scope: Scope) -> str | None:
        host = _header(scope, b"host")
        if host is None or not _HOST.match(host):
            return None
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        port = "" if self.https_port == 443 else f":{self.https_port}"
        path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        query = scope.get("query_string", b"").decode("latin-1")
        return f"https://{hostname}{port}{path}" + (f"?{query}" if query else "")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _exit_code(run: Awaitable[Any]) -> int | str | None:
    try:
        await run
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int | str) else 1
    return None


class GatewayServer:
    """Uvicorn serving `app` with our TLS context, plus the optional redirect listener."""

    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        tls: ReloadingTLS | None = None,
        *,
        redirect_port: int | None = None,
        watch_interval: float = DEFAULT_WATCH_INTERVAL,
        challenges: ChallengeLookup | None = None,
        background: Callable[[], Coroutine[Any, Any, None]] | None = None,
        redirect_protocol: type[CorkedHttpToolsProtocol] = CorkedHttpToolsProtocol,
        **options: Any,
    ) -> None:
        self._challenges, self._background = challenges, background
        if redirect_port is not None and tls is None:
            raise ValueError("an HTTPS redirect listener needs TLS on the main listener")
        self.tls, self.watch_interval = tls, watch_interval
        # Listening sockets made beforehand (several workers share them): main, redirect.
        self._sockets: list[socket.socket] = list(options.pop("sockets", None) or ())
        factory = None if tls is None else (lambda _config, _default: tls.context)
        options.setdefault("http", CorkedHttpToolsProtocol)  # one write per response
        config = uvicorn.Config(app, host=host, port=port, ssl_context_factory=factory, **options)
        self.main = uvicorn.Server(config)
        self.redirect: uvicorn.Server | None = None
        self._redirect_port = redirect_port
        self._redirect_protocol = redirect_protocol  # the edge budgets hold there too
        self.port: int | None = None
        self.redirect_port: int | None = None

    @property
    def started(self) -> bool:
        return self.main.started and (self.redirect is None or self.redirect.started)

    def run(self) -> None:
        with asyncio.Runner(loop_factory=loop_factory(self.main.config)) as runner:
            runner.run(self.serve())

    def stop(self) -> None:
        for server in self._servers():
            server.should_exit = True

    async def serve(self) -> None:
        main_socket = self._sockets[0] if self._sockets else bind_socket(self.main.config)
        self.port = main_socket.getsockname()[1]
        runs = [self.main.serve(sockets=[main_socket])]
        if self._redirect_port is not None:
            self.redirect = self._redirect_server(
                self.main.config,
                self._redirect_port,
                self.port,
                self._challenges,
                self._redirect_protocol,
            )
            redirect_socket = (
                self._sockets[1] if len(self._sockets) > 1 else bind_socket(self.redirect.config)
            )
            self.redirect_port = redirect_socket.getsockname()[1]
            runs.append(self.redirect.serve(sockets=[redirect_socket]))
        await self._run_together(runs)

    async def _run_together(self, runs: Iterable[Any]) -> None:
        tasks = [asyncio.ensure_future(_exit_code(run)) for run in runs]
        watcher = None
        if self.tls is not None:
            watcher = asyncio.create_task(self.tls.run_watcher(self.watch_interval))
        helper = None if self._background is None else asyncio.create_task(self._after_start())
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            self.stop()
            codes = await asyncio.gather(*tasks)
        finally:
            self.stop()
            for task in (watcher, helper):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        # uvicorn leaves with sys.exit(3) when start-up fails; raised inside a task that
        # would also print "Task exception was never retrieved" with a traceback.
        failed = next((code for code in codes if code), None)
        if failed is not None:
            raise SystemExit(failed)

    async def _after_start(self) -> None:
        """Run the background task once both listeners accept connections (an ACME CA
        validates against them); ends with the servers, which bound their start-up."""
        assert self._background is not None
        # uvicorn offers a flag only, no event to wait on
        while not self.started:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await self._background()

    @staticmethod
    def _redirect_server(
        main: uvicorn.Config,
        port: int,
        https_port: int,
        challenges: ChallengeLookup | None = None,
        protocol: type[CorkedHttpToolsProtocol] = CorkedHttpToolsProtocol,
    ) -> uvicorn.Server:
        config = uvicorn.Config(
            HTTPSRedirect(https_port, challenges), host=main.host, port=port, http=protocol,
            lifespan="off", log_config=None, access_log=False,
        )  # fmt: skip
        return PassiveServer(config)

    def _servers(self) -> list[uvicorn.Server]:
        return [self.main] if self.redirect is None else [self.main, self.redirect]


async def serve_uvicorn(
    app: ASGIApp,
    host: str,
    port: int,
    tls: ReloadingTLS | None = None,
    *,
    redirect_port: int | None = None,
    watch_interval: float = DEFAULT_WATCH_INTERVAL,
    challenges: ChallengeLookup | None = None,
    background: Callable[[], Coroutine[Any, Any, None]] | None = None,
    redirect_protocol: type[CorkedHttpToolsProtocol] = CorkedHttpToolsProtocol,
    **options: Any,
) -> None:
    server = GatewayServer(
        app, host, port, tls, redirect_port=redirect_port, watch_interval=watch_interval,
        challenges=challenges, background=background, redirect_protocol=redirect_protocol,
        **options,
    )  # fmt: skip
    await server.serve()
