"""What the sign-in flow asks of an identity provider, whichever kind it is."""

from __future__ import annotations

import contextlib
import importlib
import json
from typing import Any, Protocol

import httpx

from gateway.errors import InternalError
from gateway.people.identity import SignedIn

# The most a provider's discovery document, key set, token or user answer may hold.
MAX_PROVIDER_BODY = 1024 * 1024


def _transport_errors() -> tuple[type[Exception], ...]:
    """Authlib's httpx integration uses the `httpx2` package when it is installed (the
    MCP SDK brings it) and `httpx` otherwise: a failed request raises either's errors."""
    errors: list[type[Exception]] = [httpx.HTTPError]
    with contextlib.suppress(ImportError, AttributeError):
        errors.append(importlib.import_module("httpx2").HTTPError)
    return tuple(errors)


TRANSPORT_ERRORS = _transport_errors()


class ProviderError(InternalError):
    """Sign-in through the provider failed; `unreachable` when it did not answer."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.unreachable = unreachable


class IdentityProvider(Protocol):
    @property
    def label(self) -> str:
        """The provider as the pages name it."""
        ...

    async def authorization_url(
        self, *, state: str, nonce: str, verifier: str, redirect_uri: str
    ) -> str: ...

    async def finish(
        self, *, code: str, nonce: str, verifier: str, redirect_uri: str
    ) -> SignedIn: ...

    async def aclose(self) -> None: ...


async def get_json(
    http: httpx.AsyncClient, url: str, *, headers: dict[str, str] | None = None
) -> Any:
    """GET a JSON document with the client's timeouts and a size cap; ProviderError."""
    document, _ = await get_json_response(http, url, headers=headers)
    return document


async def get_json_response(
    http: httpx.AsyncClient, url: str, *, headers: dict[str, str] | None = None
) -> tuple[Any, httpx.Headers]:
    """get_json, and the answer's headers (a paginated API's `Link`)."""
    try:
        async with http.stream("GET", url, headers=headers) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_PROVIDER_BODY:
                    raise ProviderError(f"{url} answered more than {MAX_PROVIDER_BODY} bytes")
    except httpx.HTTPError as exc:
        raise ProviderError(f"{url} cannot be reached: {describe(exc)}", unreachable=True) from None
    if response.status_code != 200:
        raise ProviderError(f"{url} answered HTTP {response.status_code}")
    try:
        return json.loads(body), response.headers
    except ValueError:
        raise ProviderError(f"{url} did not answer JSON") from None


def describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__
