"""GitHub sign-in against a small GitHub-API-shaped server on loopback: the token
endpoint, `/user`, `/user/emails` and a paginated `/user/orgs` (per_page, page, and a
`Link` header as GitHub sends it)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from gateway.people.github import GithubProvider, next_page
from gateway.people.identity import Admission
from gateway.people.provider import ProviderError
from gateway.policy import Ceiling
from gateway.settings import Settings

TOKEN = "gho_loopback_token"


@dataclass
class FakeGithub:
    """What the server answers: `orgs` organisations, GitHub's default page size
    unless the client asks for another (at most 100), `broken_page` answering 500,
    `next_host` replacing the host of the next-page link."""

    orgs: list[str] = field(default_factory=list)
    broken_page: int | None = None
    next_host: str | None = None
    requests: list[str] = field(default_factory=list)
    base: str = ""

    def answer(self, path: str) -> tuple[int, Any, dict[str, str]]:
        self.requests.append(path)
        parts = urlsplit(path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/user":
            return 200, {"id": 583231, "login": "octocat", "name": "The Octocat"}, {}
        if parts.path == "/user/emails":
            return 200, [{"email": "octo@example.com", "primary": True, "verified": True}], {}
        if parts.path != "/user/orgs":
            return 404, {"message": "Not Found"}, {}
        per_page = min(int(query.get("per_page", 30)), 100)
        page = int(query.get("page", 1))
        if page == self.broken_page:
            return 500, {"message": "Server Error"}, {}
        items = [{"login": o, "id": i} for i, o in enumerate(self.orgs)]
        chunk = items[(page - 1) * per_page : page * per_page]
        last = max(1, -(-len(items) // per_page))
        links = []
        if page < last:
            host = self.next_host or self.base
            links.append(f'<{host}/user/orgs?per_page={per_page}&page={page + 1}>; rel="next"')
            links.append(f'<{self.base}/user/orgs?per_page={per_page}&page={last}>; rel="last"')
        return 200, chunk, {"Link": ", ".join(links)} if links else {}


@pytest.fixture
def github() -> Iterator[FakeGithub]:
    fake = FakeGithub()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: Any, headers: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._send(401, {"message": "Bad credentials"}, {})
                return
            self._send(*fake.answer(self.path))

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path != "/login/oauth/access_token":
                self._send(404, {"message": "Not Found"}, {})
                return
            token = {"access_token": TOKEN, "token_type": "bearer", "scope": "read:org"}
            self._send(200, token, {})

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def provider(fake: FakeGithub) -> GithubProvider:
    settings = Settings.from_env(
        {
            "MCP_OAUTH_CONSENT": "github",
            "MCP_OAUTH_ISSUER": "https://memory.example.com",
            "MCP_GITHUB_CLIENT_ID": "Ov23li",
            "MCP_GITHUB_CLIENT_SECRET": "s",
            "MCP_GITHUB_URL": fake.base,
            "MCP_GITHUB_API_URL": fake.base,
            "MCP_OIDC_TIMEOUT": "5",
        }
    )
    return GithubProvider(settings)


async def finish(fake: FakeGithub) -> Any:
    github = provider(fake)
    try:
        return await github.finish(
            code="c", nonce="n", verifier="v" * 50, redirect_uri="https://x/oauth/callback"
        )
    finally:
        await github.aclose()


@pytest.mark.anyio
async def test_every_page_of_orgs_is_read(github: FakeGithub) -> None:
    """A `people:` rule on an org past the first page still restricts its member."""
    github.orgs = [f"org-{i}" for i in range(249)] + ["Restricted"]
    who = await finish(github)
    assert len(who.groups) == 250
    assert who.groups[-1] == "restricted"
    orgs = [r for r in github.requests if r.startswith("/user/orgs")]
    assert orgs[0] == "/user/orgs?per_page=100"
    assert len(orgs) == 3
    rules = Admission(
        ceilings=(Ceiling(frozenset({"restricted"}), frozenset(), frozenset({"read"})),)
    )
    assert rules.scopes(who) == {"read"}


@pytest.mark.anyio
async def test_too_many_orgs_refuse_the_sign_in(github: FakeGithub) -> None:
    github.orgs = [f"org-{i}" for i in range(1001)]
    with pytest.raises(ProviderError, match="more than 1000 organisations"):
        await finish(github)
    assert len([r for r in github.requests if r.startswith("/user/orgs")]) == 10


@pytest.mark.anyio
async def test_an_unreadable_later_page_refuses_the_sign_in(github: FakeGithub) -> None:
    github.orgs = [f"org-{i}" for i in range(150)]
    github.broken_page = 2
    with pytest.raises(ProviderError, match="HTTP 500"):
        await finish(github)


@pytest.mark.anyio
async def test_a_next_page_off_the_api_is_not_followed(github: FakeGithub) -> None:
    """The user's token goes with every page: never to another origin."""
    github.orgs = [f"org-{i}" for i in range(150)]
    github.next_host = "http://127.0.0.2:9"
    with pytest.raises(ProviderError, match="not on its API"):
        await finish(github)


def test_next_page_from_link_headers() -> None:
    api = "https://api.github.com"
    link = (
        '<https://api.github.com/user/orgs?page=1>; rel="prev", '
        '<https://api.github.com/user/orgs?page=3>; rel="next", '
        '<https://api.github.com/user/orgs?page=9>; rel="last"'
    )
    assert next_page(link, api) == "https://api.github.com/user/orgs?page=3"
    assert next_page('<https://api.github.com/user/orgs?page=1>; rel="first"', api) is None
    assert next_page(None, api) is None
    assert next_page("", api) is None
    with pytest.raises(ProviderError):
        next_page('<https://api.github.com.evil.test/user/orgs?page=2>; rel="next"', api)
    with pytest.raises(ProviderError):
        next_page('https://api.github.com/user/orgs?page=2; rel="next"', api)
