import httpx
import pytest

from gateway.tls import HTTPSRedirect


@pytest.mark.anyio
async def test_redirect_listener_answers_http01_and_redirects_the_rest() -> None:
    tokens = {"abc_DEF-1": b"abc_DEF-1.thumb"}
    app = HTTPSRedirect(443, tokens.get)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://memory.test") as client:
        ok = await client.get("/.well-known/acme-challenge/abc_DEF-1")
        assert ok.status_code == 200
        assert ok.content == b"abc_DEF-1.thumb"
        head = await client.head("/.well-known/acme-challenge/abc_DEF-1")
        assert head.status_code == 200
        assert head.content == b""
        missing = await client.get("/.well-known/acme-challenge/other")
        assert missing.status_code == 404
        other = await client.get("/mcp")
        assert other.status_code == 308
        assert other.headers["location"] == "https://memory.test/mcp"


@pytest.mark.anyio
async def test_without_acme_challenges_are_redirected_too() -> None:
    transport = httpx.ASGITransport(app=HTTPSRedirect(443))
    async with httpx.AsyncClient(transport=transport, base_url="http://memory.test") as client:
        response = await client.get("/.well-known/acme-challenge/abc")
        assert response.status_code == 308
