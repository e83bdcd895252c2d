"""Outbound-fetch SSRF guard: resolve names ourselves, check every address, pin to it.

The guard sits in an httpcore network backend, below httpx. Every TCP connection the
client opens goes through `GuardedNetworkBackend.connect_tcp`, which

1. resolves the host name itself (an IP literal is used as is),
2. refuses the connection when *any* resolved address is forbidden (a name that
   resolves to one public and one private address is refused, so the attacker cannot
   win by ordering), and
3. connects to one of the checked addresses, never to the name: the operating system
   gets no second chance to resolve it differently (DNS rebinding).

TLS still runs against the original host name: httpcore passes the URL's host as SNI
and for certificate verification after `connect_tcp` returns, so pinning the socket
does not weaken verification. Checking at connect time (rather than once per URL)
also covers every connection httpx might open for a request.

Forbidden: loopback, private (RFC 1918, ULA, CGNAT, documentation ranges ...),
link-local (cloud metadata services live at 169.254.169.254), multicast, unspecified
and reserved addresses, including IPv4 addresses embedded in IPv6 (mapped, 6to4,
NAT64). `allow_private=True` permits loopback and private ranges (tests, on-premises
deployments); link-local, multicast, unspecified and reserved stay forbidden.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)

import anyio
import httpcore
import httpx

from gateway.errors import InternalError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolve = Callable[[str, int], Awaitable[Sequence[str]]]

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_PERMITTED_WITH_ALLOW_PRIVATE = frozenset({"loopback", "private"})


class BlockedAddressError(InternalError):
    """An outbound connection was refused because of where it would go."""


def address_problem(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why a connection to `address` is forbidden, or None when it is allowed."""
    for candidate in _with_embedded(address):
        kind = _forbidden_kind(candidate)
        if kind is None or (allow_private and kind in _PERMITTED_WITH_ALLOW_PRIVATE):
            continue
        return f"{address} is a {kind} address"
    return None


def host_problem(host: str, *, allow_private: bool) -> str | None:
    """For an IP-literal host, why it is forbidden; None for allowed literals and names."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return address_problem(address, allow_private=allow_private)


def _forbidden_kind(address: IPAddress) -> str | None:
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address.is_link_local:
        return "link-local"
    if address.is_loopback:
        return "loopback"
    if address.is_reserved:
        return "reserved"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "private"
    if address.is_private or not address.is_global or address in _CGNAT:
        return "private"
    return None


def _with_embedded(address: IPAddress) -> Iterator[IPAddress]:
    if not isinstance(address, ipaddress.IPv6Address):
        yield address
        return
    # Mapped and NAT64 addresses stand for exactly one IPv4 host: judge that host only.
    if address.ipv4_mapped is not None:
        yield address.ipv4_mapped
        return
    if address in _NAT64:
        yield ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        return
    yield address
    if address.sixtofour is not None:
        yield address.sixtofour
    if address.teredo is not None:
        yield address.teredo[1]


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address the system resolver returns for `host`, in its order, deduplicated."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """An httpcore backend that connects only to checked addresses (see module doc)."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        resolve: Resolve = system_resolve,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.allow_private = allow_private
        self._resolve = resolve
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._checked_addresses(host, port, timeout)
        failure: Exception = httpcore.ConnectError(f"no address to connect to for {host}")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout, OSError) as exc:
                failure = exc
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedAddressError("unix sockets are not allowed for outbound fetches")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)

    async def _checked_addresses(self, host: str, port: int, limit: float | None) -> list[str]:
        try:
            with anyio.fail_after(limit):
                found = [host.strip("[]")] if _is_literal(host) else await self._resolve(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        if not found:
            raise httpcore.ConnectError(f"{host} has no addresses")
        for text in found:
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                raise BlockedAddressError(f"{host} resolves to a non-IP {text!r}") from None
            problem = address_problem(address, allow_private=self.allow_private)
            if problem is not None:
                raise BlockedAddressError(f"{host} resolves to {problem}")
        return list(found)


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport over an httpcore connection pool on a `GuardedNetworkBackend`.

    Built from both libraries' public interfaces (httpx's transport API, httpcore's pool
    and network-backend API): httpx's own transport takes no network backend. No proxy
    is ever used (a proxy would connect on our behalf, unchecked).
    """

    def __init__(
        self,
        *,
        allow_private: bool = False,
        verify: ssl.SSLContext | bool = True,
        resolve: Resolve = system_resolve,
        limits: httpx.Limits | None = None,
    ) -> None:
        limits = limits or httpx.Limits(max_connections=20, max_keepalive_connections=5)
        self.backend = GuardedNetworkBackend(allow_private=allow_private, resolve=resolve)
        self.pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=self.backend,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        url = request.url
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx_errors(request):
            answer = await self.pool.handle_async_request(core)
        assert isinstance(answer.stream, AsyncIterable)
        return httpx.Response(
            status_code=answer.status,
            headers=answer.headers,
            stream=_Body(answer.stream, request),
            extensions=answer.extensions,
        )

    async def aclose(self) -> None:
        await self.pool.aclose()


# httpcore's exceptions as the httpx ones callers catch (most specific first).
_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
)


@contextlib.contextmanager
def _as_httpx_errors(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for core, mapped in _ERRORS:
            if isinstance(exc, core):
                raise mapped(str(exc), request=request) from exc
        raise


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes], request: httpx.Request) -> None:
        self._stream = stream
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors(self._request):
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()
