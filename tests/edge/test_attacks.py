"""Issue 9: one attacking connection of each kind against `memory-gateway serve` costs
the gateway less than 64 MiB of resident memory and leaves a bystander (another address)
answered within 1 s; slow heads and bodies are closed. Budgets are short here (support.
SHORT); test_defaults.py checks the default ones."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.edge.support import (
    BYSTANDER,
    SHORT,
    Bystander,
    Gateway,
    MiB,
    RssWatch,
    closed_within,
    connect,
    flood,
    raise_fd_limit,
    serve,
    trickle,
)

RSS_LIMIT_MIB = 64


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with serve(tmp_path_factory.mktemp("edge"), SHORT) as running:
        yield running


def _bounded(gateway: Gateway, attack: object) -> float:
    """Run `attack()` with the bystander and the RSS watch; returns the RSS growth."""
    with RssWatch(gateway) as rss, Bystander(gateway) as bystander:
        attack()  # type: ignore[operator]
        time.sleep(0.3)
    bystander.check(1.0)
    assert rss.growth < RSS_LIMIT_MIB, f"RSS grew {rss.growth:.0f} MiB"
    return rss.growth


@pytest.mark.parametrize(
    "path",
    [b"/api/memories", b"/healthz"],  # a local 401 on the fast path; uvicorn's pipelining
)
def test_pipelined_requests_never_read_are_bounded(gateway: Gateway, path: bytes) -> None:
    request = b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    sock = connect(gateway)

    def attack() -> None:
        sent = flood(sock, request, 32 * MiB, 15)
        assert sent > MiB  # it was read for a while, then reading stopped
        sock.close()

    _bounded(gateway, attack)


def test_chunked_trailer_lines_are_counted_against_the_head_limit(gateway: Gateway) -> None:
    sock = connect(gateway)
    sock.sendall(
        b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n\r\n0\r\n"
    )

    def attack() -> None:
        sent = flood(sock, b"X-a: b\r\n", 48 * MiB, 15)
        assert sent < 8 * MiB  # refused long before
        _took, answer = closed_within(sock, 5)
        assert b" 431 " in answer or b" 401 " in answer or answer == b""

    _bounded(gateway, attack)


def test_one_huge_trailer_value_is_refused(gateway: Gateway) -> None:
    sock = connect(gateway)
    sock.sendall(
        b"POST /api/memories HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-a: "
    )

    def attack() -> None:
        sent = flood(sock, b"a" * 4096, 48 * MiB, 15)
        assert sent < 8 * MiB
        closed_within(sock, 5)

    _bounded(gateway, attack)


def test_trailers_are_not_merged_into_the_request(gateway: Gateway) -> None:
    sock = connect(gateway)
    sock.sendall(
        b"POST /oauth/register HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/json\r\n\r\n"
        b'1a\r\n{"client_name": "trailer"}\r\n0\r\nContent-Type: text/plain\r\n\r\n'
    )
    sock.settimeout(5)
    answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 201 ")
    sock.close()


def test_silent_connection_is_closed_after_the_head_timeout(gateway: Gateway) -> None:
    sock = connect(gateway)

    def attack() -> None:
        took, answer = closed_within(sock, 30)
        assert 1.5 < took < 4
        assert answer == b""  # never asked anything: closed without an answer

    _bounded(gateway, attack)


def test_partial_head_gets_408_and_is_closed(gateway: Gateway) -> None:
    sock = connect(gateway)
    sock.sendall(b"GET /api/memories HTTP/1.1\r\nHost: x\r\n")

    def attack() -> None:
        took, answer = closed_within(sock, 30)
        assert took < 4
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "invalid_request"

    _bounded(gateway, attack)


def test_trickled_head_is_closed(gateway: Gateway) -> None:
    sock = connect(gateway)
    head = b"GET /api/memories HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200

    def attack() -> None:
        assert trickle(sock, head, 0.2, 30) < 4

    _bounded(gateway, attack)


def test_trickled_body_is_closed(gateway: Gateway) -> None:
    sock = connect(gateway)
    sock.sendall(
        b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n\r\n"
    )

    def attack() -> None:
        took = trickle(sock, b"a" * 1000, 0.5, 60)
        assert took < 6  # MCP_GATEWAY_BODY_TIMEOUT=4 here

    _bounded(gateway, attack)


def test_idle_body_gets_408(gateway: Gateway) -> None:
    sock = connect(gateway)
    sock.sendall(
        b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n\r\nab"
    )
    took, answer = closed_within(sock, 30)
    assert took < 4
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert answer.count(b"HTTP/1.1") == 1


def test_unread_body_after_an_early_answer_closes_without_a_second_answer(
    gateway: Gateway,
) -> None:
    sock = connect(gateway)  # refused for its content type before the body is read
    sock.sendall(b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
    took, answer = closed_within(sock, 30)
    assert took < 4
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert answer.count(b"HTTP/1.1") == 1


def test_aborted_body_is_one_log_line_without_a_traceback(gateway: Gateway) -> None:
    before = gateway.log_text()
    sock = connect(gateway)
    sock.sendall(
        b"POST /oauth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"client_name"'
    )
    time.sleep(0.3)
    sock.close()
    time.sleep(0.5)
    added = gateway.log_text()[len(before) :]
    assert "Traceback" not in added
    assert "unexpected error" not in added
    assert added.count("client disconnected") == 1, added


def test_three_thousand_half_open_connections_do_not_stop_a_request(gateway: Gateway) -> None:
    raise_fd_limit(4000)
    held: list[socket.socket] = []
    try:
        with RssWatch(gateway) as rss:
            for _ in range(3000):
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", gateway.port))
                held.append(sock)
            time.sleep(0.5)
            transport = httpx.HTTPTransport(local_address=BYSTANDER)
            with httpx.Client(transport=transport, timeout=5) as http:
                start = time.monotonic()
                assert http.get(f"{gateway.url}/healthz").status_code == 200
                assert time.monotonic() - start < 1
        assert rss.growth < RSS_LIMIT_MIB
    finally:
        for sock in held:
            sock.close()


def test_connections_over_the_per_address_cap_get_503(tmp_path: Path) -> None:
    env = {**SHORT, "MCP_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS": "5"}
    with serve(tmp_path, env) as gateway:
        held = [connect(gateway) for _ in range(5)]
        extra = connect(gateway)
        _took, answer = closed_within(extra, 5)
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"temporarily_unavailable" in answer
        transport = httpx.HTTPTransport(local_address=BYSTANDER)
        with httpx.Client(transport=transport, timeout=5) as http:
            assert http.get(f"{gateway.url}/healthz").status_code == 200
        for sock in held:
            sock.close()
        time.sleep(0.3)
        with httpx.Client(timeout=5) as http:  # the attacker's address is free again
            assert http.get(f"{gateway.url}/healthz").status_code == 200


def test_connections_over_the_total_cap_get_503(tmp_path: Path) -> None:
    env = {**SHORT, "MCP_GATEWAY_MAX_CONNECTIONS": "4"}
    with serve(tmp_path, env) as gateway:
        held = [connect(gateway, f"127.0.0.{i}") for i in range(1, 5)]
        _took, answer = closed_within(connect(gateway, "127.0.0.9"), 5)
        assert answer.startswith(b"HTTP/1.1 503 ")
        for sock in held:
            sock.close()
        time.sleep(0.3)
        with httpx.Client(timeout=5) as http:
            assert http.get(f"{gateway.url}/healthz").status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/healthz"), ("GET", "/api/memories"), ("POST", "/oauth/token"),
     ("GET", "/.well-known/oauth-authorization-server"), ("POST", "/oauth/register")],
)  # fmt: skip
def test_json_answers_carry_nosniff(gateway: Gateway, method: str, path: str) -> None:
    with httpx.Client(base_url=gateway.url, timeout=5) as http:
        response = http.request(method, path, json={} if method == "POST" else None)
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-content-type-options"] == "nosniff"


def test_partial_head_behind_a_slow_answer_never_cuts_into_it(tmp_path: Path) -> None:
    key = "edge-test-api-key-0123456789"
    with serve(tmp_path, {**SHORT, "MCP_API_KEY": key}) as gateway:
        sock = connect(gateway)
        sock.sendall(
            b"GET /api/slow?delay=4 HTTP/1.1\r\nHost: x\r\nX-API-Key: " + key.encode()
            + b"\r\n\r\nGET /api/memories HTTP/1.1\r\nHost: x\r\n"  # the second head stops
        )  # fmt: skip
        took, answer = closed_within(sock, 30)
    assert 3.5 < took < 8  # the slow answer (4 s) was finished, then the connection closed
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.count(b"HTTP/1.1 ") == 1  # no 408 inside or after it
    assert answer.endswith(b"{}") or answer.endswith(b"0\r\n\r\n")


def test_a_trusted_proxy_is_held_to_the_total_cap_only(tmp_path: Path) -> None:
    env = {
        **SHORT,
        "MCP_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS": "3",
        "MCP_GATEWAY_TRUSTED_PROXIES": "127.0.0.1/32",
    }
    with serve(tmp_path, env) as gateway:
        held = [connect(gateway) for _ in range(6)]  # a reverse proxy's connections
        with httpx.Client(timeout=5) as http:
            assert http.get(f"{gateway.url}/healthz").status_code == 200
        others = [connect(gateway, "127.0.0.5") for _ in range(3)]
        _took, answer = closed_within(connect(gateway, "127.0.0.5"), 5)
        assert answer.startswith(b"HTTP/1.1 503 ")  # any other address: its own cap
        for sock in held + others:
            sock.close()
