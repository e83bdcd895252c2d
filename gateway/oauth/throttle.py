"""The OAuth endpoints' rate limit per client address (PROTOCOL R5), for a request."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from gateway.net import Network
from gateway.ratelimit import RateLimiter, client_address


@dataclass(frozen=True)
class PeerLimit:
    """`await limit(bucket, request)`: TooManyRequests past the bucket's budget for the
    request's client address (behind `trusted_proxies`, the X-Forwarded-For hop)."""

    limiter: RateLimiter
    trusted_proxies: tuple[Network, ...] = ()

    async def __call__(self, bucket: str, request: Request) -> None:
        peer = request.client.host if request.client else "unknown"
        forwarded = request.headers.getlist("x-forwarded-for")
        await self.limiter.check(bucket, client_address(peer, forwarded, self.trusted_proxies))
