"""A real OpenID Provider (panva's oidc-provider, tests/people/provider) and a gateway
signing people in through it, on loopback; and a headless person's browser.

`PersonAgent` plays the browser a real MCP client opens: it follows the gateway's
redirect to the provider, fills the provider's login form (devInteractions) and its
consent form with plain HTTP, comes back through `/oauth/callback`, and approves or
denies the gateway's consent page. It keeps cookies like a browser, so the
`__Host-` session cookie carries over between authorizations.

`Wiretap` is a byte relay between the gateway and the real backend that keeps what
the gateway sent, so tests can read the identity headers on the wire.
"""

from __future__ import annotations

import asyncio
import base64
import html.parser
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from gateway.app import create_app
from gateway.certs import ensure_dev_certs
from gateway.settings import Settings
from tests.clients.consent import AuthorizationFailed, Redirect, redirect_params
from tests.e2e.support import Pkce
from tests.integration.live import LiveGateway, live_backend, running
from tests.ports import bound_socket, port_of, reserved_port, start_retrying

PROVIDER_DIR = Path(__file__).resolve().parent / "provider"
CLIENTS_NODE = Path(__file__).resolve().parents[1] / "clients" / "node_modules" / ".bin" / "node"
OIDC_CLIENT_ID = "memory-gateway"
OIDC_CLIENT_SECRET = "memory-gateway-test-secret-0123456789"
API_KEY = "people-operator-api-key-0123456789"
MAX_TAP_BYTES = 4 * 1024 * 1024


def find_node() -> str:
    """Node.js 22 from tests/clients when installed (oidc-provider prefers it), else the
    system's; skip (or fail with REQUIRE_NODE=1) without node or the provider package."""
    node = str(CLIENTS_NODE) if CLIENTS_NODE.exists() else shutil.which("node")
    installed = (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir()
    if node and installed:
        return node
    problem = (
        "node is not on PATH"
        if not node
        else "tests/people/provider/node_modules is missing (run `npm ci` there)"
    )
    if os.environ.get("REQUIRE_NODE") == "1":
        pytest.fail(f"REQUIRE_NODE=1 but {problem}")
    pytest.skip(problem)


@dataclass
class OpenIdProvider:
    issuer: str
    port: int
    redirect_uri: str
    node: str
    process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.node, str(PROVIDER_DIR / "provider.mjs"), str(self.port), self.redirect_uri],
            cwd=PROVIDER_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line.startswith("READY"):
                return
            if not line and self.process.poll() is not None:
                break
        self.stop()
        raise RuntimeError("oidc-provider did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


class Wiretap:
    """A TCP relay on loopback that records the bytes sent to `target` (bounded)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = bound_socket()  # served on as it is: no port race
        self.port = port_of(self._listener)
        self.sent = bytearray()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Wiretap:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("wiretap did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def text(self) -> str:
        return bytes(self.sent).decode("latin-1")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._relay, sock=self._listener)
        )
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.target_port), 5
            )
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, tap: bool) -> None:
            try:
                while chunk := await src.read(65536):
                    if tap and len(self.sent) < MAX_TAP_BYTES:
                        self.sent += chunk
                    dst.write(chunk)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))


@dataclass(frozen=True)
class PeopleStack:
    gateway: LiveGateway
    provider: OpenIdProvider
    tap: Wiretap


@contextmanager
def people_stack(root: Path, extra_env: dict[str, str] | None = None) -> Iterator[PeopleStack]:
    node = find_node()
    listener = bound_socket()  # the gateway's, handed over at its start
    gateway_port = port_of(listener)
    url = f"https://localhost:{gateway_port}"

    def start_provider() -> OpenIdProvider:
        # oidc-provider is told its port (its issuer names it): a reserved one, retried.
        port = reserved_port()
        provider = OpenIdProvider(f"http://127.0.0.1:{port}", port, f"{url}/oauth/callback", node)
        provider.start()
        return provider

    provider = start_retrying(start_provider)
    certs = ensure_dev_certs(root / "certs")
    verify = ssl.create_default_context(cafile=str(certs.ca_cert))
    try:
        with (
            live_backend(root) as backend_url,
            Wiretap(int(backend_url.rsplit(":", 1)[1])) as tap,
        ):
            env = {
                "MCP_HTTPS_ENABLED": "true",
                "MCP_SSL_CERT_FILE": str(certs.server_cert),
                "MCP_SSL_KEY_FILE": str(certs.server_key),
                "MCP_HTTP_HOST": "127.0.0.1",
                "MCP_HTTP_PORT": str(gateway_port),
                "MCP_OAUTH_ISSUER": url,
                "MCP_GATEWAY_UPSTREAM": f"http://127.0.0.1:{tap.port}",
                "MCP_GATEWAY_STATE_DIR": str(root / "state"),
                "MCP_OAUTH_RATE_LIMIT_PER_MINUTE": "0",
                "MCP_API_KEY": API_KEY,
                "MCP_OAUTH_CONSENT": "oidc",
                "MCP_OIDC_ISSUER": provider.issuer,
                "MCP_OIDC_CLIENT_ID": OIDC_CLIENT_ID,
                "MCP_OIDC_CLIENT_SECRET": OIDC_CLIENT_SECRET,
                "MCP_OIDC_SCOPES": "openid email profile groups",
                "MCP_OAUTH_ALLOWED_DOMAINS": "example.com",
                "MCP_OAUTH_ALLOWED_GROUPS": "partners",
                "MCP_OAUTH_ADMIN_GROUPS": "memory-admins",
                **(extra_env or {}),
            }
            gateway_cmd = [sys.executable, "-m", "gateway", "serve"]
            with running(gateway_cmd, env, f"{url}/healthz", verify, listener=listener):
                gateway = LiveGateway(
                    url, certs.ca_cert, verify, API_KEY, backend_url, root / "state"
                )
                yield PeopleStack(gateway, provider, tap)
    finally:
        provider.stop()


class _Forms(html.parser.HTMLParser):
    """Every form of a page: action, method and inputs (hidden ones with values)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.forms.append((values.get("action", ""), {}))
        elif tag == "input" and self.forms and "name" in values:
            self.forms[-1][1][values["name"]] = values.get("value", "")


def forms(page: str) -> list[tuple[str, dict[str, str]]]:
    parser = _Forms()
    parser.feed(page)
    return parser.forms


@dataclass
class PersonAgent:
    """A person's browser: signs in at the provider as `login` and decides consent."""

    stack: PeopleStack
    login: str
    decision: str = "approve"
    http: httpx.AsyncClient = field(init=False)
    visited: list[str] = field(default_factory=list)
    pages: list[httpx.Response] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.http = httpx.AsyncClient(verify=self.stack.gateway.verify, timeout=15)

    async def aclose(self) -> None:
        await self.http.aclose()

    def _ours(self, url: str) -> bool:
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
        return origin in (self.stack.gateway.url, self.stack.provider.issuer)

    async def authorize(self, url: str) -> Redirect:
        """Follow `url` until the browser is sent to the MCP client's redirect URI."""
        self.visited.append(url)
        return await self.follow(await self.http.get(url, headers={"Accept": "text/html"}))

    async def until_callback(self, url: str) -> str:
        """Follow `url` through the provider's sign-in; the provider's redirect to the
        gateway's /oauth/callback, not followed."""
        response = await self.http.get(url, headers={"Accept": "text/html"})
        callback = f"{self.stack.gateway.url}/oauth/callback"
        for _ in range(20):
            if response.status_code in (302, 303):
                location = urljoin(str(response.url), response.headers["location"])
                if location.startswith(callback):
                    return location
                response = await self.http.get(location, headers={"Accept": "text/html"})
            elif response.status_code == 200:
                response = await self.submit(response)
            else:
                break
        raise AuthorizationFailed(f"{response.status_code} at {response.url}: {response.text}")

    async def follow(self, response: httpx.Response) -> Redirect:
        """Go on from `response` (redirects, forms) to the MCP client's redirect URI."""
        for _ in range(20):
            self.pages.append(response)
            if response.status_code in (302, 303) and "location" in response.headers:
                location = urljoin(str(response.url), response.headers["location"])
                if not self._ours(location):
                    return Redirect(location, redirect_params(location))
                response = await self.http.get(location, headers={"Accept": "text/html"})
                continue
            if response.status_code == 200:
                response = await self.submit(response)
                continue
            break
        raise AuthorizationFailed(
            f"{response.status_code} at {response.url}: {response.text[:500]}"
        )

    async def submit(self, page: httpx.Response) -> httpx.Response:
        """Fill the one form a page asks for: provider login or consent, gateway consent."""
        found = forms(page.text)
        if not found:
            raise AuthorizationFailed(f"no form at {page.url}: {page.text[:300]}")
        action, fields = found[0]
        target = urljoin(str(page.url), action)
        if fields.get("prompt") == "login":
            data = {**fields, "login": self.login, "password": "any password"}
        elif fields.get("prompt") == "consent":
            data = fields
        elif action == "/oauth/authorize/consent":
            data = {**fields, "decision": self.decision}
        else:
            raise AuthorizationFailed(f"unexpected form {action} at {page.url}")
        return await self.http.post(target, data=data, headers={"Accept": "text/html"})


def jwt_claims(token: str) -> dict[str, Any]:
    """A JWT's payload, unverified (the gateway checks signatures; tests read claims)."""
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def wait_port_closed(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.1)


async def authorize_in_process(
    oidc_issuer: str, provider_timeout: float
) -> tuple[httpx.Response, float]:
    """`/oauth/authorize` of an in-process oidc-consent gateway whose provider is
    `oidc_issuer`, for a freshly registered public client: (the page, seconds it took)."""
    settings = Settings(
        issuer="https://localhost:9",
        consent="oidc",
        storage="memory://",
        oidc_issuer=oidc_issuer,
        oidc_client_id="x",
        oidc_client_secret="y",
        provider_timeout=provider_timeout,
        rate_limit_per_minute=0,
    )
    gateway = create_app(settings)
    await gateway.startup()
    try:
        transport = httpx.ASGITransport(app=gateway)
        async with httpx.AsyncClient(transport=transport, base_url=settings.issuer) as http:
            client = await http.post(
                "/oauth/register",
                json={
                    "redirect_uris": ["http://127.0.0.1:5000/cb"],
                    "token_endpoint_auth_method": "none",
                },
            )
            query = {
                "response_type": "code",
                "client_id": client.json()["client_id"],
                "code_challenge": Pkce.new().challenge,
                "code_challenge_method": "S256",
                "state": "s",
            }
            started = time.monotonic()
            async with asyncio.timeout(15):
                page = await http.get("/oauth/authorize", params=query)
            return page, time.monotonic() - started
    finally:
        await gateway.shutdown()
