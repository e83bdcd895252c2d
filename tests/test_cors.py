import pytest

from gateway.cors import is_preflight, preflight_response, response_headers

ORIGIN = (b"origin", b"https://claude.ai")
REQUEST_METHOD = (b"access-control-request-method", b"POST")


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("OPTIONS", [ORIGIN, REQUEST_METHOD], True),
        ("OPTIONS", [(b"Origin", b"https://x"), (b"Access-Control-Request-Method", b"GET")], True),
        ("OPTIONS", [ORIGIN, REQUEST_METHOD, (b"authorization", b"Bearer x")], True),
        ("OPTIONS", [ORIGIN], False),
        ("OPTIONS", [REQUEST_METHOD], False),
        ("OPTIONS", [], False),
        ("POST", [ORIGIN, REQUEST_METHOD], False),
        ("GET", [ORIGIN], False),
    ],
)
def test_p5_preflight_detection(
    method: str, headers: list[tuple[bytes, bytes]], expected: bool
) -> None:
    assert is_preflight(method, headers) is expected


def _headers(pairs: list[tuple[bytes, bytes]]) -> dict[str, str]:
    names = [k for k, _ in pairs]
    assert len(names) == len(set(names))
    return {k.decode(): v.decode() for k, v in pairs}


def test_p5_preflight_allows_what_mcp_clients_send() -> None:
    raw = preflight_response(b"https://claude.ai")
    assert raw.status == 204
    assert raw.body == b""
    headers = _headers(raw.headers)
    assert headers["access-control-allow-origin"] == "https://claude.ai"
    assert headers["vary"] == "Origin"
    allowed = {h.strip().lower() for h in headers["access-control-allow-headers"].split(",")}
    assert allowed >= {
        "authorization",
        "content-type",
        "mcp-protocol-version",
        "mcp-session-id",
        "last-event-id",
        "x-api-key",
    }
    methods = {m.strip() for m in headers["access-control-allow-methods"].split(",")}
    assert methods >= {"GET", "POST", "DELETE", "PUT", "PATCH"}
    assert int(headers["access-control-max-age"]) > 0
    # Bearer headers, not cookies: credentials mode is never granted.
    assert "access-control-allow-credentials" not in headers


def test_p5_actual_responses_expose_the_challenge_and_session_headers() -> None:
    headers = _headers(response_headers(b"https://claude.ai"))
    assert headers["access-control-allow-origin"] == "https://claude.ai"
    assert headers["vary"] == "Origin"
    exposed = {h.strip().lower() for h in headers["access-control-expose-headers"].split(",")}
    assert exposed >= {"www-authenticate", "mcp-session-id"}


@pytest.mark.parametrize("origin", [None, b""])
def test_p5_no_cors_headers_without_origin(origin: bytes | None) -> None:
    assert response_headers(origin) == []


def test_p5_returned_lists_are_fresh() -> None:
    response_headers(b"https://a").append((b"x", b"y"))
    assert (b"x", b"y") not in response_headers(b"https://a")
    preflight_response(b"https://a").headers.clear()
    assert preflight_response(b"https://a").headers


def test_cors_never_grants_the_wildcard() -> None:
    for headers in (preflight_response(b"https://a").headers, response_headers(b"https://a")):
        assert (b"access-control-allow-origin", b"*") not in headers
