"""R6 Client ID Metadata Documents and the outbound-fetch SSRF guard.

End-to-end tests run a real HTTPS server on 127.0.0.1 with a per-run trustme CA.
"""

from __future__ import annotations

import ipaddress
import json
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import httpcore
import httpx
import pytest
import trustme

from gateway.errors import InvalidClient
from gateway.errors import response as render_response
from gateway.netguard import (
    BlockedAddressError,
    GuardedNetworkBackend,
    GuardedTransport,
    address_problem,
)
from gateway.oauth.client_metadata import (
    DEFAULT_MAX_BYTES,
    MAX_TTL,
    MIN_TTL,
    ClientMetadataResolver,
    cache_ttl,
    check_client_id_url,
    client_from_document,
    is_client_metadata_url,
)
from tests.clock import Clock

URL = "https://app.example.com/oauth/client.json"
NOW = 1_800_000_000.0


def doc(client_id: str | None = URL, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "client_id": client_id,
        "client_name": "Example MCP Client",
        "redirect_uris": ["http://127.0.0.1:33418/callback", "https://app.example.com/cb"],
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


# ---------------------------------------------------------------- URL rules (pure)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (URL, True),
        ("https://app.example.com/c?v=2", True),
        ("HTTPS://app.example.com/client.json", True),
        ("https://app.example.com", False),
        ("https://app.example.com/", False),
        ("http://app.example.com/client.json", False),
        ("0f9c2a7e-4b1d-4c55-9a57-2e1f0c7b9d31", False),
        ("mcp-client-abc123", False),
        ("https:///client.json", False),
        ("https://[::1/client.json", False),
        ("", False),
    ],
)
def test_r6_is_client_metadata_url(value: str, expected: bool) -> None:
    assert is_client_metadata_url(value) is expected


@pytest.mark.parametrize(
    ("value", "phrase"),
    [
        ("http://app.example.com/client.json", "https"),
        ("https://user:pw@app.example.com/client.json", "username or password"),
        ("https://user@app.example.com/client.json", "username or password"),
        ("https://app.example.com/client.json#frag", "fragment"),
        ("https://app.example.com/client.json#", "fragment"),
        ("https://app.example.com", "path"),
        ("https://app.example.com/", "path"),
        ("https://app.example.com/a/../client.json", ". or .."),
        ("https://app.example.com/./client.json", ". or .."),
        ("https://app.example.com/a/%2e%2E/client.json", ". or .."),
        ("https://app.example.com/a b.json", "whitespace"),
        ("https://app.example.com\\evil.com/x", "backslash"),
        ("https://app.example.com:99999/client.json", "not a valid URL"),
        ("https://app.example.com/" + "a" * 3000, "longer than"),
    ],
)
def test_r6_client_id_url_rules_refuse(value: str, phrase: str) -> None:
    with pytest.raises(InvalidClient) as caught:
        check_client_id_url(value)
    assert phrase in caught.value.description


@pytest.mark.parametrize(
    "value",
    [URL, "https://app.example.com:8443/client.json", "https://app.example.com/c?tenant=1"],
)
def test_r6_client_id_url_rules_accept(value: str) -> None:
    assert check_client_id_url(value).hostname == "app.example.com"


# ---------------------------------------------------------------- document rules (pure)


@pytest.mark.parametrize(
    ("document", "phrase"),
    [
        (["not", "an", "object"], "not a JSON object"),
        (doc(client_id="https://other.example.com/oauth/client.json"), "does not equal"),
        (doc(client_id=URL + "/"), "does not equal"),
        (doc(client_id=None), "does not equal"),
        (doc(redirect_uris=None), "at least one redirect_uri"),
        (doc(redirect_uris=[]), "at least one redirect_uri"),
        (doc(redirect_uris="https://app.example.com/cb"), "at least one redirect_uri"),
        (doc(redirect_uris=["https://app.example.com/cb#f"]), "fragment"),
        (doc(redirect_uris=["http://app.example.com/cb"]), "loopback"),
        (doc(redirect_uris=["https://app.example.com/cb", "javascript:alert(1)"]), "javascript"),
        (doc(redirect_uris=["data:text/html,hi"]), "data"),
        (doc(redirect_uris=["cursor://anysphere.cursor-retrieval/cb"]), "cursor"),
        (doc(redirect_uris=["/relative/cb"]), "absolute"),
        (doc(redirect_uris=[42]), "redirect_uris"),
        (doc(client_secret="s3cret"), "client_secret"),
        (doc(client_secret_expires_at=0), "client_secret_expires_at"),
        (doc(token_endpoint_auth_method="client_secret_basic"), "must be none"),
        (doc(token_endpoint_auth_method="private_key_jwt"), "must be none"),
        (doc(grant_types=["client_credentials"]), "authorization_code"),
        (doc(response_types=["token"]), "include code"),
    ],
)
def test_r6_document_refused(document: object, phrase: str) -> None:
    with pytest.raises(InvalidClient) as caught:
        client_from_document(URL, document)
    assert phrase in caught.value.description
    assert URL in caught.value.description


def test_r6_document_becomes_public_cimd_client() -> None:
    document = doc(
        token_endpoint_auth_method="none",
        scope="read offline_access profile",
        client_uri="https://app.example.com",
        logo_uri="javascript:alert(1)",
        tos_uri="https://app.example.com/tos",
        contacts=["ops@example.com"],
        software_id="example-client",
        unknown_field="ignored",
    )
    client = client_from_document(URL, document)
    assert client.client_id == URL
    assert client.source == "cimd"
    assert client.is_public
    assert client.token_endpoint_auth_method == "none"
    assert client.redirect_uris == (
        "http://127.0.0.1:33418/callback",
        "https://app.example.com/cb",
    )
    assert client.client_name == "Example MCP Client"
    assert client.scopes == {"read", "offline_access"}
    assert client.grant_types == ("authorization_code", "refresh_token")
    assert client.metadata == {
        "client_uri": "https://app.example.com",
        "tos_uri": "https://app.example.com/tos",
        "contacts": ["ops@example.com"],
        "software_id": "example-client",
    }


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        (None, {"read", "write"}),
        ("", {"read", "write"}),
        ("openid profile", {"read", "write"}),
        ("read", {"read"}),
        ("read write admin offline_access", {"read", "write", "admin", "offline_access"}),
        (["read"], {"read", "write"}),
    ],
)
def test_r6_document_scope_is_intersected_with_supported(scope: object, expected: set[str]) -> None:
    assert client_from_document(URL, doc(scope=scope)).scopes == expected


def test_r6_private_use_redirect_scheme_needs_operator_allow_list() -> None:
    document = doc(redirect_uris=["cursor://anysphere.cursor-retrieval/oauth/callback"])
    with pytest.raises(InvalidClient):
        client_from_document(URL, document)
    client = client_from_document(URL, document, allowed_schemes=("cursor",))
    assert client.redirect_uris == ("cursor://anysphere.cursor-retrieval/oauth/callback",)


# ---------------------------------------------------------------- caching rules (pure)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, 300.0),
        ({"cache-control": "max-age=3600"}, 3600.0),
        ({"cache-control": "public, max-age=600"}, 600.0),
        ({"cache-control": 'max-age="600"'}, 600.0),
        ({"cache-control": "max-age=600", "age": "100"}, 500.0),
        ({"cache-control": "max-age=600, s-maxage=1200"}, 1200.0),
        ({"cache-control": "max-age=5"}, MIN_TTL),
        ({"cache-control": "max-age=9999999"}, MAX_TTL),
        ({"cache-control": "max-age=0"}, 0.0),
        ({"cache-control": "max-age=60", "age": "90"}, 0.0),
        ({"cache-control": "no-store"}, 0.0),
        ({"cache-control": "max-age=600, no-store"}, 0.0),
        ({"cache-control": "no-cache"}, 0.0),
        ({"cache-control": "max-age=bogus"}, 300.0),
        (
            {"expires": "Fri, 15 Jan 2027 08:00:00 GMT", "date": "Fri, 15 Jan 2027 07:00:00 GMT"},
            3600.0,
        ),
        ({"expires": "Thu, 01 Jan 1970 00:00:00 GMT"}, 0.0),
        ({"expires": "0"}, 0.0),
        ({"expires": "Fri, 15 Jan 2027 08:00:00 GMT", "cache-control": "max-age=120"}, 120.0),
    ],
)
def test_r6_cache_ttl_follows_http_caching_headers(
    headers: dict[str, str], expected: float
) -> None:
    assert cache_ttl(headers, NOW) == expected


# ---------------------------------------------------------------- SSRF guard (pure)


@pytest.mark.parametrize(
    ("address", "blocked", "blocked_even_if_private_allowed"),
    [
        ("93.184.216.34", False, False),
        ("2606:2800:220:1:248:1893:25c8:1946", False, False),
        ("127.0.0.1", True, False),
        ("127.8.9.10", True, False),
        ("::1", True, False),
        ("10.1.2.3", True, False),
        ("172.16.0.1", True, False),
        ("192.168.1.1", True, False),
        ("100.64.0.1", True, False),
        ("fd00::1", True, False),
        ("fec0::1", True, False),
        ("169.254.169.254", True, True),
        ("fe80::1", True, True),
        ("0.0.0.0", True, True),
        ("::", True, True),
        ("224.0.0.1", True, True),
        ("239.255.255.250", True, True),
        ("ff02::1", True, True),
        ("240.0.0.1", True, True),
        ("255.255.255.255", True, True),
        ("::ffff:127.0.0.1", True, False),
        ("::ffff:169.254.169.254", True, True),
        ("2002:a9fe:a9fe::1", True, True),
        ("64:ff9b::a9fe:a9fe", True, True),
        ("64:ff9b::5db8:d822", False, False),
    ],
)
def test_r6_address_rules(
    address: str, blocked: bool, blocked_even_if_private_allowed: bool
) -> None:
    ip = ipaddress.ip_address(address)
    assert (address_problem(ip, allow_private=False) is not None) is blocked
    assert (address_problem(ip, allow_private=True) is not None) is blocked_even_if_private_allowed


class RecordingBackend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self.connected: list[str] = []

    async def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        self.connected.append(host)
        raise httpcore.ConnectError("recorded only")


def fixed_resolver(answers: Sequence[str]) -> Any:
    async def resolve(host: str, port: int) -> Sequence[str]:
        return answers

    return resolve


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answers",
    [["93.184.216.34", "127.0.0.1"], ["127.0.0.1", "93.184.216.34"], ["10.0.0.5"], ["::1"]],
)
async def test_r6_every_resolved_address_is_checked_before_connecting(answers: list[str]) -> None:
    inner = RecordingBackend()
    backend = GuardedNetworkBackend(resolve=fixed_resolver(answers), inner=inner)
    with pytest.raises(BlockedAddressError):
        await backend.connect_tcp("rebind.example.com", 443)
    assert inner.connected == []


@pytest.mark.anyio
async def test_r6_connection_is_pinned_to_the_checked_address() -> None:
    inner = RecordingBackend()
    backend = GuardedNetworkBackend(
        resolve=fixed_resolver(["93.184.216.34", "2606:2800:220:1::1"]), inner=inner
    )
    with pytest.raises(httpcore.ConnectError):
        await backend.connect_tcp("app.example.com", 443)
    assert inner.connected == ["93.184.216.34", "2606:2800:220:1::1"]


# ---------------------------------------------------------------- end to end over HTTPS


@dataclass
class Route:
    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    delay: float = 0.0
    chunked: bool = False
    chunk_size: int = 4096
    pause: float = 0.0


class Site:
    def __init__(self, port: int) -> None:
        self.port = port
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"https://{host}:{self.port}{path}"

    def serve(self, path: str, document: object, **options: Any) -> str:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        self.routes[path] = Route(body=body, **options)
        return self.url(path)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: TLSServer

    def do_GET(self) -> None:
        site = self.server.site
        site.hits[self.path] += 1
        route = site.routes.get(self.path) or Route(body=b"{}", status=404)
        time.sleep(route.delay)
        self.send_response(route.status)
        for name, value in route.headers.items():
            self.send_header(name, value)
        if route.chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(route.body), route.chunk_size):
                piece = route.body[start : start + route.chunk_size]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
                time.sleep(route.pause)
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            self.wfile.write(route.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    site: Site

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out or refuse close sockets under us


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server(ca: trustme.CA) -> Iterator[TLSServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost", "client.test").configure_cert(context)
    httpd = TLSServer(("127.0.0.1", 0), Handler)
    httpd.socket = context.wrap_socket(
        httpd.socket, server_side=True, do_handshake_on_connect=False
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def site(server: TLSServer) -> Site:
    server.site = Site(server.server_address[1])
    return server.site


@pytest.fixture
def trust(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
async def resolver(trust: ssl.SSLContext, clock: Clock) -> Any:
    resolver = ClientMetadataResolver(allow_private=True, verify=trust, clock=clock, timeout=2.0)
    yield resolver
    await resolver.aclose()


@pytest.fixture
async def strict_resolver(trust: ssl.SSLContext) -> Any:
    resolver = ClientMetadataResolver(allow_private=False, verify=trust, timeout=2.0)
    yield resolver
    await resolver.aclose()


async def refused(resolver: ClientMetadataResolver, client_id: str) -> str:
    with pytest.raises(InvalidClient) as caught:
        await resolver.resolve(client_id)
    return caught.value.description


@pytest.mark.anyio
async def test_r6_resolves_a_served_document_to_a_public_client(
    site: Site, resolver: ClientMetadataResolver
) -> None:
    url = site.url("/client.json")
    site.serve("/client.json", doc(url, scope="read write", logo_uri="https://x.test/l.png"))
    client = await resolver.resolve(url)
    assert client.client_id == url
    assert client.source == "cimd"
    assert client.is_public
    assert client.client_name == "Example MCP Client"
    assert "https://app.example.com/cb" in client.redirect_uris
    assert client.metadata == {"logo_uri": "https://x.test/l.png"}
    assert site.hits["/client.json"] == 1


@pytest.mark.anyio
async def test_r6_refusal_renders_as_invalid_client_json(
    site: Site, resolver: ClientMetadataResolver
) -> None:
    url = site.url("/missing.json")
    with pytest.raises(InvalidClient) as caught:
        await resolver.resolve(url)
    response = render_response(caught.value)
    assert response.status_code == 401
    body = json.loads(bytes(response.body))
    assert body["error"] == "invalid_client"
    assert "HTTP 404" in body["error_description"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("host", "phrase"),
    [
        ("127.0.0.1", "loopback"),
        ("[::1]", "loopback"),
        ("10.0.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("localhost", "loopback"),
    ],
)
async def test_r6_private_targets_refused_unless_allowed(
    site: Site, strict_resolver: ClientMetadataResolver, host: str, phrase: str
) -> None:
    url = site.url("/client.json", host=host)
    site.serve("/client.json", doc(url))
    started = time.monotonic()
    description = await refused(strict_resolver, url)
    assert "host refused" in description
    # A DNS name is checked when connecting; the test site's port (not 443) is refused
    # before that now, which keeps the private target just as unreached.
    assert phrase in description or (host == "localhost" and "port 443" in description)
    assert site.hits["/client.json"] == 0
    assert time.monotonic() - started < 1.0


@pytest.mark.anyio
async def test_r6_dns_name_is_pinned_to_checked_address_and_tls_checks_the_name(
    site: Site, trust: ssl.SSLContext
) -> None:
    transport = GuardedTransport(
        allow_private=True, verify=trust, resolve=fixed_resolver(["127.0.0.1"])
    )
    resolver = ClientMetadataResolver(allow_private=True, transport=transport)
    try:
        url = site.url("/client.json", host="client.test")
        site.serve("/client.json", doc(url))
        assert (await resolver.resolve(url)).client_id == url
        wrong_name = site.url("/client.json", host="other.test")
        assert "fetch failed" in await refused(resolver, wrong_name)
    finally:
        await resolver.aclose()


@pytest.mark.anyio
async def test_r6_untrusted_certificate_refused(site: Site) -> None:
    resolver = ClientMetadataResolver(allow_private=True, timeout=2.0)
    try:
        url = site.serve("/client.json", b"{}")
        assert "certificate is not trusted" in await refused(resolver, url)
    finally:
        await resolver.aclose()


@pytest.mark.anyio
async def test_r6_redirects_are_not_followed(site: Site, resolver: ClientMetadataResolver) -> None:
    target = site.serve("/client.json", doc(site.url("/moved.json")))
    url = site.serve("/moved.json", b"", status=302, headers={"Location": target})
    assert "redirect" in await refused(resolver, url)
    assert site.hits["/client.json"] == 0


@pytest.mark.anyio
@pytest.mark.parametrize("chunked", [False, True])
async def test_r6_oversized_document_refused(
    site: Site, resolver: ClientMetadataResolver, chunked: bool
) -> None:
    url = site.url("/big.json")
    padded = doc(url, client_uri="https://app.example.com/" + "a" * DEFAULT_MAX_BYTES)
    site.serve("/big.json", padded, chunked=chunked)
    assert f"larger than {DEFAULT_MAX_BYTES} bytes" in await refused(resolver, url)


@pytest.mark.anyio
async def test_r6_document_just_under_the_cap_accepted(
    site: Site, resolver: ClientMetadataResolver
) -> None:
    url = site.url("/padded.json")
    padding = DEFAULT_MAX_BYTES - len(json.dumps(doc(url, software_id=""))) - 10
    site.serve("/padded.json", doc(url, software_id="x" * padding), chunked=True)
    assert (await resolver.resolve(url)).client_id == url


@pytest.mark.anyio
async def test_r6_slow_server_times_out(site: Site, trust: ssl.SSLContext) -> None:
    resolver = ClientMetadataResolver(allow_private=True, verify=trust, timeout=0.5)
    try:
        url = site.url("/slow.json")
        site.serve("/slow.json", doc(url), delay=2.0)
        started = time.monotonic()
        assert "no answer within 0.5 s" in await refused(resolver, url)
        assert time.monotonic() - started < 1.5
    finally:
        await resolver.aclose()


@pytest.mark.anyio
async def test_r6_trickling_server_hits_the_overall_deadline(
    site: Site, trust: ssl.SSLContext
) -> None:
    resolver = ClientMetadataResolver(allow_private=True, verify=trust, timeout=0.6)
    try:
        url = site.url("/trickle.json")
        site.serve("/trickle.json", doc(url), chunked=True, chunk_size=8, pause=0.1)
        started = time.monotonic()
        assert "no answer within 0.6 s" in await refused(resolver, url)
        assert time.monotonic() - started < 1.5
    finally:
        await resolver.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "phrase"),
    [
        ({"Content-Type": "text/html"}, "not JSON"),
        ({}, "not JSON"),
        ({"Content-Type": "application/json", "Content-Encoding": "gzip"}, "encoding"),
    ],
)
async def test_r6_non_json_responses_refused(
    site: Site, resolver: ClientMetadataResolver, headers: dict[str, str], phrase: str
) -> None:
    url = site.url("/client.json")
    site.serve("/client.json", doc(url), headers=headers)
    assert phrase in await refused(resolver, url)


@pytest.mark.anyio
async def test_r6_json_with_suffix_media_type_accepted(
    site: Site, resolver: ClientMetadataResolver
) -> None:
    url = site.url("/client.json")
    headers = {"Content-Type": "application/client-metadata+json; charset=utf-8"}
    site.serve("/client.json", doc(url), headers=headers)
    assert (await resolver.resolve(url)).client_id == url


@pytest.mark.anyio
async def test_r6_malformed_json_refused(site: Site, resolver: ClientMetadataResolver) -> None:
    url = site.serve("/client.json", b'{"client_id": ')
    assert "not valid UTF-8 JSON" in await refused(resolver, url)


@pytest.mark.anyio
async def test_r6_client_id_mismatch_refused(site: Site, resolver: ClientMetadataResolver) -> None:
    url = site.serve("/client.json", doc("https://app.example.com/oauth/client.json"))
    assert "does not equal its URL" in await refused(resolver, url)


@pytest.mark.anyio
async def test_r6_missing_redirect_uris_refused(
    site: Site, resolver: ClientMetadataResolver
) -> None:
    url = site.url("/client.json")
    site.serve("/client.json", doc(url, redirect_uris=None))
    assert "redirect_uri" in await refused(resolver, url)


@pytest.mark.anyio
async def test_r6_cache_honours_max_age(
    site: Site, resolver: ClientMetadataResolver, clock: Clock
) -> None:
    url = site.url("/client.json")
    headers = {"Content-Type": "application/json", "Cache-Control": "max-age=120"}
    site.serve("/client.json", doc(url), headers=headers)
    await resolver.resolve(url)
    clock.now += 119
    await resolver.resolve(url)
    assert site.hits["/client.json"] == 1
    clock.now += 2
    await resolver.resolve(url)
    assert site.hits["/client.json"] == 2


@pytest.mark.anyio
async def test_r6_no_store_is_fetched_every_time(
    site: Site, resolver: ClientMetadataResolver
) -> None:
    url = site.url("/client.json")
    headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
    site.serve("/client.json", doc(url), headers=headers)
    for _ in range(3):
        await resolver.resolve(url)
    assert site.hits["/client.json"] == 3


@pytest.mark.anyio
async def test_r6_changed_document_seen_after_expiry_and_failures_not_cached(
    site: Site, resolver: ClientMetadataResolver, clock: Clock
) -> None:
    url = site.url("/client.json")
    site.serve("/client.json", doc(url, redirect_uris=None))
    await refused(resolver, url)
    site.serve("/client.json", doc(url, client_name="Fixed"))
    assert (await resolver.resolve(url)).client_name == "Fixed"
    site.serve("/client.json", doc(url, client_name="Renamed"))
    assert (await resolver.resolve(url)).client_name == "Fixed"
    clock.now += 301
    assert (await resolver.resolve(url)).client_name == "Renamed"


@pytest.mark.anyio
async def test_r6_cache_is_bounded(site: Site, trust: ssl.SSLContext) -> None:
    resolver = ClientMetadataResolver(allow_private=True, verify=trust, cache_size=2)
    try:
        urls = [site.url(f"/c{i}.json") for i in range(3)]
        for i, url in enumerate(urls):
            site.serve(f"/c{i}.json", doc(url))
            await resolver.resolve(url)
        await resolver.resolve(urls[2])
        await resolver.resolve(urls[0])
        assert site.hits == Counter({"/c0.json": 2, "/c1.json": 1, "/c2.json": 1})
    finally:
        await resolver.aclose()


@pytest.mark.anyio
async def test_r6_concurrent_first_requests_share_one_fetch(
    site: Site, resolver: ClientMetadataResolver
) -> None:
    url = site.url("/client.json")
    site.serve("/client.json", doc(url), delay=0.2)
    results: list[str] = []

    async def one() -> None:
        results.append((await resolver.resolve(url)).client_id)

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(one)
    assert results == [url] * 5
    assert site.hits["/client.json"] == 1


# ------------------------------------------- stored documents, stale-if-error, supplied


@pytest.fixture
async def stored_resolver(trust: ssl.SSLContext, clock: Clock) -> Any:
    from gateway.store.memory import MemoryStore

    store = MemoryStore()
    resolver = ClientMetadataResolver(
        allow_private=True,
        verify=trust,
        clock=clock,
        timeout=2.0,
        store=store,
        stale_seconds=3600,
    )
    yield resolver
    await resolver.aclose()


def _fresh_resolver_on(old: ClientMetadataResolver, trust: ssl.SSLContext, clock: Clock) -> Any:
    """A new resolver (a restart: empty memory cache) on the same store."""
    return ClientMetadataResolver(
        allow_private=True,
        verify=trust,
        clock=clock,
        timeout=2.0,
        store=old.store,
        stale_seconds=old.stale_seconds,
    )


@pytest.mark.anyio
async def test_cimd_fetch_failure_after_one_good_fetch_still_admits(
    site: Site, stored_resolver: ClientMetadataResolver, trust: ssl.SSLContext, clock: Clock
) -> None:
    url = site.serve("/c.json", doc(site.url("/c.json")), headers=_json_max_age(300))
    assert (await stored_resolver.resolve(url)).client_id == url
    assert site.hits["/c.json"] == 1
    # restarted gateway, document still fresh: from the store, no fetch
    again = _fresh_resolver_on(stored_resolver, trust, clock)
    try:
        assert (await again.resolve(url)).client_id == url
        assert site.hits["/c.json"] == 1
    finally:
        await again.aclose()
    # the metadata host now fails (a CDN challenge page, 403 text/html), lifetime over
    site.serve(
        "/c.json", b"<html>challenge</html>", status=403, headers={"Content-Type": "text/html"}
    )
    clock.now += 301
    later = _fresh_resolver_on(stored_resolver, trust, clock)
    try:
        client = await later.resolve(url)
        assert client.client_id == url
        assert client.redirect_uris == tuple(doc(url)["redirect_uris"])
        assert site.hits["/c.json"] == 2
        # ... and bounded: past stale_seconds it is refused
        clock.now += 3600
        later._cache = type(later._cache)(16)
        assert "HTTP 403" in await refused(later, url)
    finally:
        await later.aclose()


@pytest.mark.anyio
async def test_cimd_invalid_document_is_not_replaced_by_the_stored_one(
    site: Site, stored_resolver: ClientMetadataResolver, clock: Clock
) -> None:
    url = site.serve("/d.json", doc(site.url("/d.json")), headers=_json_max_age(60))
    await stored_resolver.resolve(url)
    site.serve(
        "/d.json", doc(url, redirect_uris=["javascript:alert(1)"]), headers=_json_max_age(60)
    )
    clock.now += 61
    assert "redirect_uris" in await refused(stored_resolver, url)


@pytest.mark.anyio
async def test_cimd_no_store_documents_are_not_kept(
    site: Site, stored_resolver: ClientMetadataResolver, clock: Clock
) -> None:
    headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
    url = site.serve("/n.json", doc(site.url("/n.json")), headers=headers)
    await stored_resolver.resolve(url)
    assert stored_resolver.store is not None
    assert await stored_resolver.store.get_client(url) is None


@pytest.mark.anyio
@pytest.mark.parametrize("successor", ["no-store", "invalid"])
async def test_cimd_a_superseded_stored_document_does_not_come_back_when_the_host_fails(
    site: Site, stored_resolver: ClientMetadataResolver, clock: Clock, successor: str
) -> None:
    """The client withdraws a redirect URI (a new `no-store` document, or one we
    refuse); when its host later fails, the old stored document (with the withdrawn
    URI) must not be served as the stale-if-error answer."""
    url = site.url("/w.json")
    old = doc(url, redirect_uris=["https://withdrawn.example/cb"])
    site.serve("/w.json", old, headers=_json_max_age(60))
    assert (await stored_resolver.resolve(url)).redirect_uris == ("https://withdrawn.example/cb",)
    if successor == "no-store":
        headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
        site.serve("/w.json", doc(url, redirect_uris=["https://new.example/cb"]), headers=headers)
        clock.now += 61
        assert (await stored_resolver.resolve(url)).redirect_uris == ("https://new.example/cb",)
    else:
        bad = doc(url, redirect_uris=["javascript:alert(1)"])
        site.serve("/w.json", bad, headers=_json_max_age(60))
        clock.now += 61
        assert "redirect_uris" in await refused(stored_resolver, url)
    site.serve("/w.json", b"<html>down</html>", status=503, headers={"Content-Type": "text/html"})
    clock.now += 1
    stored_resolver._cache = type(stored_resolver._cache)(16)
    assert "HTTP 503" in await refused(stored_resolver, url)


def test_cimd_supplied_documents_load_and_refuse_bad_ones(tmp_path: Any) -> None:
    from gateway.oauth.client_metadata import SuppliedDocumentError, load_supplied

    good = "https://claude.ai/oauth/claude-code-client-metadata"
    (tmp_path / "claude-code.json").write_text(json.dumps(doc(good)))
    supplied = load_supplied(tmp_path)
    assert list(supplied) == [good]
    assert supplied[good].source == "cimd"
    (tmp_path / "bad.json").write_text(json.dumps(doc("http://insecure.test/x")))
    with pytest.raises(SuppliedDocumentError, match=r"bad\.json: .*https"):
        load_supplied(tmp_path)
    with pytest.raises(SuppliedDocumentError, match="not a directory"):
        load_supplied(tmp_path / "missing")


@pytest.mark.anyio
async def test_cimd_supplied_document_works_with_no_network() -> None:
    """A supplied document answers for its client_id; nothing is fetched (the transport
    refuses every connection)."""

    attempts: list[str] = []

    class NoNetwork(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            attempts.append(str(request.url))
            raise httpx.ConnectError("no network", request=request)

    url = "https://claude.ai/oauth/claude-code-client-metadata"
    supplied = {url: client_from_document(url, doc(url))}
    resolver = ClientMetadataResolver(transport=NoNetwork(), supplied=supplied)
    try:
        assert (await resolver.resolve(url)).client_id == url
        assert attempts == []
        other = "https://elsewhere.example/client.json"
        assert "fetch failed" in await refused(resolver, other)
        assert attempts == [other]
    finally:
        await resolver.aclose()


def _json_max_age(seconds: int) -> dict[str, str]:
    return {"Content-Type": "application/json", "Cache-Control": f"max-age={seconds}"}


@pytest.mark.anyio
async def test_cimd_stored_documents_are_no_clients_once_cimd_is_off() -> None:
    """MCP_OAUTH_CIMD_ENABLED=false: a document stored while it was on (the store keeps
    them for restarts) must not answer as a registered client, with no fetch and no
    freshness check."""
    from gateway.app import create_app
    from gateway.settings import Settings
    from tests.e2e.support import Pkce

    settings = Settings(
        issuer="https://localhost:9",
        storage="memory://",
        api_key="k" * 32,
        cimd_enabled=False,
        rate_limit_per_minute=0,
        upstream="http://127.0.0.1:9",
    )
    gateway = create_app(settings)
    await gateway.startup()
    try:
        assert gateway.authorization is not None
        url = "https://app.example/client.json"
        stored = client_from_document(url, doc(url, redirect_uris=["https://app.example/cb"]))
        assert await gateway.authorization.store.add_client(stored, limit=10)
        transport = httpx.ASGITransport(app=gateway)
        async with httpx.AsyncClient(transport=transport, base_url=settings.issuer) as http:
            page = await http.get(
                "/oauth/authorize",
                params={
                    "response_type": "code",
                    "client_id": url,
                    "redirect_uri": "https://app.example/cb",
                    "code_challenge": Pkce.new().challenge,
                    "code_challenge_method": "S256",
                    "state": "s",
                },
            )
    finally:
        await gateway.shutdown()
    assert page.status_code == 400, page.text
