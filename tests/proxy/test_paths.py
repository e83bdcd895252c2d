import pytest

from gateway.proxy.paths import InvalidPath, canonical_path


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        (b"/api/memories", "/api/memories"),
        (b"/mcp", "/mcp"),
        (b"/mcp/", "/mcp/"),
        (b"/api/../api/server/x", "/api/server/x"),
        (b"/api/%2e%2e/api/server/x", "/api/server/x"),
        (b"/api/%2E%2E/api/server/x", "/api/server/x"),
        (b"/api/.%2e/api/server", "/api/server"),
        (b"/api/./memories", "/api/memories"),
        (b"/api//server//x", "/api/server/x"),
        (b"//api/server", "/api/server"),
        (b"/api;x/server", "/api/server"),
        (b"/api/server;jsessionid=1/x", "/api/server/x"),
        (b"/api/..;x/api/admin", "/api/admin"),
        (b"/%61pi/health", "/api/health"),
        (b"/api/memories/a%20b", "/api/memories/a%20b"),
        (b"/api/memories/%c3%a9", "/api/memories/%C3%A9"),
        (b"/api/memories/a%3bb", "/api/memories/a%3Bb"),
        (b"/api/memories/.", "/api/memories/"),
        (b"/api/memories/x/..", "/api/memories/"),
        (b"/", "/"),
        (b"/.", "/"),
    ],
)
def test_p2_canonical_form(raw: bytes, canonical: str) -> None:
    assert canonical_path(raw) == canonical


@pytest.mark.parametrize(
    "raw",
    [
        b"/api/a%2fb",
        b"/api/a%2Fb",
        b"/api%2f..%2fserver",
        b"/api/a%5cb",
        b"/api\\server",
        b"/api/%00",
        b"/api/a\x00b",
        b"/api/%zz",
        b"/api/%",
        b"/api/%4",
        b"/api/%ff",
        b"/api/%c3",
        b"/api/\xc3\xa9",
        b"/api/a b",
        b"/api/a%0Ab",
        b"/..",
        b"/api/../../etc",
        b"api/health",
        b"",
    ],
)
def test_p2_uncanonicalisable_paths_are_rejected(raw: bytes) -> None:
    with pytest.raises(InvalidPath) as caught:
        canonical_path(raw)
    assert caught.value.status_code == 400
