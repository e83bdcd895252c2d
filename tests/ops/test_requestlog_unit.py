"""Request-log lines: valid JSON for any header-borne value, redaction, route classes."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

from gateway.observability.exchange import Exchange, route_class
from gateway.observability.requestlog import (
    REDACTED,
    LineSink,
    RequestLog,
    write_to_log_streams,
)

JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlc2lnbmF0dXJl"


def record(path: str = "/api/memories") -> Exchange:
    exchange = Exchange("GET", path, "::1")
    exchange.status, exchange.bytes = 200, 12
    return exchange


def test_json_lines_stay_valid_with_quotes_backslashes_and_unicode() -> None:
    written: list[str] = []
    log = RequestLog("json", LineSink(written.append), secrets=("k" * 20,))
    exchange = record('/api/"odd"\\path/é')
    exchange.subject = b'ali"ce\\\n'
    exchange.client_id = "clïent".encode()
    exchange.request_id = JWT.encode()
    log.write(exchange, 0.0012)
    log.sink.flush()
    line = json.loads(written[0])
    assert line["path"] == '/api/"odd"\\path/é'
    assert line["subject"] == 'ali"ce\\\n'
    assert line["client_id"] == "clïent"
    assert line["request_id"] == REDACTED
    assert line["duration_ms"] == 1.2
    assert line["upstream_ms"] is None


def test_paths_lose_query_jwts_and_secrets() -> None:
    log = RequestLog("text", LineSink(lambda _: None), secrets=("s3cret-api-key-value",))
    assert log.safe_path(f"/api/memories/{JWT}") == f"/api/memories/{REDACTED}"
    assert log.safe_path("/api/s3cret-api-key-value/x?token=1") == f"/api/{REDACTED}/x"
    assert log.safe_path("/api/v1.2/file.txt") == "/api/v1.2/file.txt"
    text = log.line(record(), 0.5)
    assert '"GET /api/memories" 200 12B 500.0ms upstream=-' in text


def test_route_classes() -> None:
    assert route_class("/api/memories") == "rest"
    assert route_class("/mcp") == "mcp"
    assert route_class("/readyz") == "health"
    assert route_class("/oauth/token") == "oauth_token"
    assert route_class("/token") == "oauth_token"
    assert route_class("/oauth/register/abc") == "oauth_register"
    assert route_class("/.well-known/oauth-authorization-server") == "discovery"
    assert route_class("/favicon.ico") == "other"


def test_a_handler_without_an_open_stream_is_passed_over(tmp_path: Path) -> None:
    """A closed FileHandler (its stream is None) left on the root logger: the lines
    still reach the other streams, and nothing raises."""
    root = logging.getLogger()
    closed = logging.FileHandler(tmp_path / "closed.log")
    closed.close()
    assert closed.stream is None
    alive = logging.StreamHandler(io.StringIO())
    root.addHandler(closed)
    root.addHandler(alive)
    try:
        write_to_log_streams("one line\n")
    finally:
        root.removeHandler(closed)
        root.removeHandler(alive)
    assert alive.stream.getvalue() == "one line\n"
