"""The ProxyApp alone on uvicorn, with the real Authenticator, Challenges and default
Policy and an HS256 token service, for tests and the benchmark.

Run: python -m tests.proxy.gateway_server PORT UPSTREAM [KEY=VALUE settings overrides]
(PORT or fd=N: a listening socket handed over, see tests.ports.run_uvicorn)
`protocol=asgi` serves every request through the ASGI app (no protocol fast path).
"""

from __future__ import annotations

import sys
from dataclasses import replace

from gateway.auth import Authenticator, Challenges
from gateway.http_protocol import CorkedHttpToolsProtocol, fast_proxy_protocol
from gateway.oauth.keys import hs256_ring
from gateway.oauth.tokens import TokenService
from gateway.policy import Policy
from gateway.proxy import ProxyApp
from gateway.proxy.forward import Upstream
from gateway.settings import Settings

SECRET = "test-secret-key-that-is-long-enough-for-hs256"
API_KEY = "test-api-key"
ISSUER = "http://localhost:8000"


def token_service() -> TokenService:
    return TokenService(hs256_ring(SECRET), issuer=ISSUER, ttl=3600)


def build(settings: Settings, upstream: Upstream | None = None) -> ProxyApp:
    return ProxyApp(
        settings,
        authenticator=Authenticator(
            tokens=token_service(),
            resource=settings.resource,
            api_key=API_KEY,
            is_revoked=lambda claims: False,
        ),
        challenges=Challenges(f"{settings.issuer}/.well-known/oauth-protected-resource/mcp"),
        policy=Policy.default(),
        upstream=upstream,
    )


def settings_from(upstream: str, overrides: list[str]) -> tuple[Settings, dict[str, str]]:
    settings = Settings(issuer=ISSUER, upstream=upstream, api_key=API_KEY, secret_key=SECRET)
    values: dict[str, object] = {}
    ssl: dict[str, str] = {}
    for item in overrides:
        key, _, value = item.partition("=")
        if key == "protocol":
            continue
        if key.startswith("ssl_"):
            ssl[key] = value
        elif key == "trusted_proxies":
            values[key] = tuple(value.split(","))
        elif key == "upstream_api_key":
            values[key] = value
        else:
            values[key] = float(value)
    return replace(settings, **values), ssl  # type: ignore[arg-type]


if __name__ == "__main__":
    from tests.ports import run_uvicorn

    listen, upstream = sys.argv[1], sys.argv[2]
    settings, ssl = settings_from(upstream, sys.argv[3:])
    proxy = build(settings)
    asgi_only = "protocol=asgi" in sys.argv[3:]
    run_uvicorn(
        proxy,
        listen,
        loop="uvloop",
        http=CorkedHttpToolsProtocol if asgi_only else fast_proxy_protocol(proxy, lambda _: True),
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
        proxy_headers=False,
        **ssl,
    )
