"""Server-side TLS against real handshakes on 127.0.0.1, with a trustme CA per run."""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import trustme
from cryptography import x509
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from gateway.tls import GatewayServer, HSTSMiddleware, HTTPSRedirect, ReloadingTLS, server_context

LOOPBACK = "127.0.0.1"


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"scheme": request.url.scheme, "path": request.url.path,
                         "query": request.url.query})  # fmt: skip


ECHO_APP = Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST"])])


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def write_pair(ca: trustme.CA, cert_file: Path, key_file: Path) -> int:
    """Issue a leaf for loopback, replace the files atomically, return its serial."""
    leaf = ca.issue_cert(LOOPBACK, "localhost")
    for data, path in ((leaf.private_key_pem.bytes(), key_file),
                       (leaf.cert_chain_pems[0].bytes(), cert_file)):  # fmt: skip
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).serial_number


@pytest.fixture
def pair(tmp_path: Path, ca: trustme.CA) -> tuple[Path, Path, int]:
    cert_file, key_file = tmp_path / "server.pem", tmp_path / "server.key"
    return cert_file, key_file, write_pair(ca, cert_file, key_file)


def client_context(ca: trustme.CA | None = None, cafile: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    if ca is not None:
        ca.configure_trust(context)
    return context


@contextmanager
def running(
    app: ASGIApp, tls: ReloadingTLS | None, *, loop: str = "asyncio", redirect: bool = False
) -> Iterator[GatewayServer]:
    server = GatewayServer(
        app, LOOPBACK, 0, tls, redirect_port=0 if redirect else None, watch_interval=0.05,
        loop=loop, lifespan="off", log_config=None, access_log=False,
    )  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, "server start")
        yield server
    finally:
        server.stop()
        thread.join(timeout=10)
    assert not thread.is_alive(), "server did not stop"


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@contextmanager
def connect(
    port: int, context: ssl.SSLContext, hostname: str = LOOPBACK
) -> Iterator[ssl.SSLSocket]:
    with (
        socket.create_connection((LOOPBACK, port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=hostname) as tls,
    ):
        yield tls


def served_serial(port: int, context: ssl.SSLContext) -> int:
    with connect(port, context) as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number


def http_get(tls: ssl.SSLSocket, path: str = "/") -> bytes:
    tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = tls.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def memory_handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> str | None:
    """Handshake two contexts through memory buffers; the version, or an SSLError."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client_side = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    pending = {client_side, server_side}
    for _ in range(20):
        for side in list(pending):
            try:
                side.do_handshake()
                pending.discard(side)
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if not pending:
            return client_side.version()
    raise AssertionError("handshake did not finish")


# --- protocol versions and ciphers ---------------------------------------------------


@pytest.mark.parametrize(
    ("version", "name"),
    [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")],
)
def test_tls12_and_tls13_are_accepted_with_aead_and_alpn(
    pair: tuple[Path, Path, int], ca: trustme.CA, version: ssl.TLSVersion, name: str
) -> None:
    cert_file, key_file, _ = pair
    client = client_context(ca)
    client.minimum_version = client.maximum_version = version
    client.set_alpn_protocols(["h2", "http/1.1"])
    with running(ECHO_APP, ReloadingTLS(cert_file, key_file)) as server:
        assert server.port is not None
        with connect(server.port, client) as tls:
            assert tls.version() == name
            cipher = tls.cipher()
            assert cipher is not None
            assert "GCM" in cipher[0] or "CHACHA20" in cipher[0]
            assert tls.selected_alpn_protocol() == "http/1.1"
            assert b'"scheme":"https"' in http_get(tls, "/x")


def legacy_client(ca: trustme.CA) -> ssl.SSLContext:
    client = client_context(ca)
    client.set_ciphers("DEFAULT:@SECLEVEL=0")
    client.minimum_version = client.maximum_version = ssl.TLSVersion.TLSv1_1
    return client


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls11_is_refused(pair: tuple[Path, Path, int], ca: trustme.CA) -> None:
    cert_file, key_file, _ = pair
    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    permissive.minimum_version = ssl.TLSVersion.TLSv1
    permissive.load_cert_chain(cert_file, key_file)
    try:
        control = memory_handshake(permissive, legacy_client(ca))
    except ssl.SSLError as exc:
        pytest.skip(f"this OpenSSL cannot speak TLS 1.1 at all, so no refusal to see: {exc}")
    assert control == "TLSv1.1"

    with running(ECHO_APP, ReloadingTLS(cert_file, key_file)) as server:
        assert server.port is not None
        with pytest.raises(ssl.SSLError), connect(server.port, legacy_client(ca)):
            pass


def test_tls12_cbc_only_client_is_refused(pair: tuple[Path, Path, int], ca: trustme.CA) -> None:
    cert_file, key_file, _ = pair
    client = client_context(ca)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.set_ciphers("ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA")
    assert memory_handshake(server_context(cert_file, key_file), client_context(ca)) == "TLSv1.3"
    with running(ECHO_APP, ReloadingTLS(cert_file, key_file)) as server:
        assert server.port is not None
        with pytest.raises(ssl.SSLError), connect(server.port, client):
            pass


# --- certificate reload ----------------------------------------------------------------


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_new_certificate_on_disk_is_served_without_restart(
    pair: tuple[Path, Path, int], ca: trustme.CA, loop: str
) -> None:
    cert_file, key_file, first = pair
    client = client_context(ca)
    with running(ECHO_APP, ReloadingTLS(cert_file, key_file), loop=loop) as server:
        assert server.port is not None
        port = server.port
        assert served_serial(port, client) == first
        with connect(port, client) as before_swap:
            second = write_pair(ca, cert_file, key_file)
            wait_for(lambda: served_serial(port, client) == second, "the new certificate")
            assert b'"path":"/still-open"' in http_get(before_swap, "/still-open")
        with connect(port, client) as after_swap:
            assert b'"path":"/new"' in http_get(after_swap, "/new")


def test_broken_new_pair_keeps_the_old_one_serving(
    pair: tuple[Path, Path, int], ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    cert_file, key_file, first = pair
    client = client_context(ca)
    caplog.set_level(logging.INFO, logger="gateway.tls")
    with running(ECHO_APP, ReloadingTLS(cert_file, key_file)) as server:
        assert server.port is not None
        port = server.port
        # A key that does not belong to the certificate, as during a half-done copy.
        key_file.write_bytes(ca.issue_cert(LOOPBACK).private_key_pem.bytes())
        wait_for(lambda: "failed" in caplog.text, "the failed reload to be logged")
        assert "KEY_VALUES_MISMATCH" in caplog.text or "key values mismatch" in caplog.text
        assert served_serial(port, client) == first

        cert_file.write_text("not a certificate\n")
        wait_for(lambda: caplog.text.count("failed") >= 2, "the second failed reload")
        assert served_serial(port, client) == first

        second = write_pair(ca, cert_file, key_file)
        wait_for(lambda: served_serial(port, client) == second, "recovery with a good pair")


def test_check_ignores_a_touch_and_retries_a_failed_pair_only_once(
    pair: tuple[Path, Path, int], ca: trustme.CA
) -> None:
    cert_file, key_file, _ = pair
    tls = ReloadingTLS(cert_file, key_file)
    served = tls.current
    cert_file.write_bytes(cert_file.read_bytes())  # new mtime, same bytes
    assert tls.check() is None
    key_file.write_bytes(ca.issue_cert(LOOPBACK).private_key_pem.bytes())
    assert tls.check() is False
    os.utime(key_file, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert tls.check() is None
    assert tls.current is served
    write_pair(ca, cert_file, key_file)
    assert tls.check() is True
    assert tls.current is not served


def test_a_broken_pair_at_start_is_an_error(pair: tuple[Path, Path, int]) -> None:
    cert_file, key_file, _ = pair
    key_file.write_text("garbage\n")
    with pytest.raises(ssl.SSLError):
        ReloadingTLS(cert_file, key_file)


# --- plain-HTTP redirect and HSTS -------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "https_port", "path", "query", "expected"),
    [
        ("example.test", 8443, b"/a/b", b"x=1&y=%2F", "https://example.test:8443/a/b?x=1&y=%2F"),
        ("example.test:80", 443, b"/", b"", "https://example.test/"),
        ("[::1]:8080", 8443, b"/mcp", b"", "https://[::1]:8443/mcp"),
        ("127.0.0.1:8080", 9443, b"/p%20q", b"", "https://127.0.0.1:9443/p%20q"),
        ("evil.test/x", 8443, b"/", b"", None),
        ("a b", 8443, b"/", b"", None),
        (None, 8443, b"/", b"", None),
    ],
)
def test_redirect_location(
    host: str | None, https_port: int, path: bytes, query: bytes, expected: str | None
) -> None:
    headers = [] if host is None else [(b"host", host.encode())]
    scope = {"type": "http", "path": path.decode(), "raw_path": path, "query_string": query,
             "headers": headers}  # fmt: skip
    assert HTTPSRedirect(https_port).location(scope) == expected


def test_redirect_listener_sends_plain_http_to_https(
    pair: tuple[Path, Path, int], ca: trustme.CA
) -> None:
    cert_file, key_file, _ = pair
    with running(ECHO_APP, ReloadingTLS(cert_file, key_file), redirect=True) as server:
        plain = f"http://{LOOPBACK}:{server.redirect_port}"
        response = httpx.post(f"{plain}/oauth/token?a=1", content=b"x")
        assert response.status_code == 308
        assert response.headers["location"] == f"https://{LOOPBACK}:{server.port}/oauth/token?a=1"

        with httpx.Client(verify=client_context(ca), follow_redirects=True) as client:
            followed = client.get(f"{plain}/hello?x=%2F")
        assert followed.json() == {"scheme": "https", "path": "/hello", "query": "x=%2F"}


def test_redirect_listener_without_tls_is_refused() -> None:
    with pytest.raises(ValueError, match="needs TLS"):
        GatewayServer(ECHO_APP, LOOPBACK, 0, None, redirect_port=0)


def test_hsts_only_on_https(pair: tuple[Path, Path, int], ca: trustme.CA) -> None:
    cert_file, key_file, _ = pair
    app = HSTSMiddleware(ECHO_APP, max_age=600)
    with running(app, ReloadingTLS(cert_file, key_file)) as server:
        response = httpx.get(f"https://{LOOPBACK}:{server.port}/", verify=client_context(ca))
        assert response.headers["strict-transport-security"] == "max-age=600"
    with running(app, None) as server:
        response = httpx.get(f"http://{LOOPBACK}:{server.port}/")
        assert response.status_code == 200
        assert "strict-transport-security" not in response.headers
