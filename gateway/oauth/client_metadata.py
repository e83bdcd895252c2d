"""Client ID Metadata Documents (PROTOCOL R6; draft-ietf-oauth-client-id-metadata-document).

A client may use an https URL as its `client_id`; the document at that URL is its
registered metadata. Rules applied, from the draft and the MCP authorization spec:

- The URL "MUST have an https scheme, MUST contain a path component, MUST NOT contain
  single-dot or double-dot path segments, MAY contain a query string component, MUST
  NOT contain a fragment component, MUST NOT contain a username or password". A path
  of just `/` does not count as a path component here.
- The document "MUST contain a client_id property" equal to the URL by simple string
  comparison; it MUST NOT carry `client_secret` / `client_secret_expires_at`, and no
  shared-secret authentication method: only `none` (absent means `none`), so every
  such client is public and must use PKCE.
- `redirect_uris` is required; each must pass R3.

Fetching: https only, no redirects followed, `application/json` (or `+json`) only,
at most `max_bytes` (default 16 KiB: the draft suggests limiting the size, real
documents are well under 2 KiB), one deadline of `timeout` seconds for the whole
exchange, and every connection made through `gateway.netguard` (no private,
loopback, link-local ... targets unless `allow_private`).

Caching follows HTTP caching headers (`no-store`/`no-cache`/`max-age=0` → not cached,
`s-maxage`/`max-age` minus `Age`, else `Expires`, else 5 minutes), clamped to
[60 s, 24 h], in a bounded LRU. Failures are not cached.

Every failure raises `InvalidClient` with a description naming the problem: to the
authorization server a client whose document cannot be used is an unknown client.

Surviving an unreachable metadata host (corporate egress, a CDN challenging a
datacenter address): with a `store`, every fetched document (once validated) is kept
in the client store with the time it was fetched and how long it is fresh, so it
survives restarts and is shared by replicas; a stored document still fresh is used
without a fetch. When a refetch fails at the fetch level (no answer, an HTTP error,
a non-JSON challenge page), a stored document fetched at most `stale_seconds` ago is
used instead (stale-if-error, RFC 5861 in spirit), and retried after MIN_TTL. A
document that arrives and is invalid is authoritative: it is refused, never
replaced by the stored one. `no-store` documents are not stored. An operator can
supply documents (`supplied`, read by `load_supplied` from MCP_OAUTH_CIMD_DIR): those
are used as they are, with no network at all.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import SplitResult, unquote, urlsplit

import anyio
import httpx

from gateway.errors import InvalidClient, InvalidRedirectUri
from gateway.models import SUPPORTED_SCOPES, Client
from gateway.netguard import BlockedAddressError, GuardedTransport, host_problem
from gateway.oauth.redirects import validate_redirect_uri
from gateway.settings import SettingsError

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 16 * 1024
DEFAULT_TTL = 300.0
MIN_TTL = 60.0
MAX_TTL = 86_400.0
MAX_URL_LENGTH = 2048
MAX_NAME_LENGTH = 200
DEFAULT_SCOPE = "read write"
DEFAULT_GRANT_TYPES = ("authorization_code", "refresh_token")
ECHOED_URI_FIELDS = ("client_uri", "logo_uri", "tos_uri", "policy_uri")
ECHOED_TEXT_FIELDS = ("software_id", "software_version")
FORBIDDEN_FIELDS = ("client_secret", "client_secret_expires_at")
_USER_AGENT = "memory-gateway client-metadata fetcher"
FETCHED_AT = "cimd_fetched_at"
FRESH_UNTIL = "cimd_fresh_until"
DEFAULT_STALE_SECONDS = 7 * 86400
MAX_SUPPLIED = 1000


class DocumentStore(Protocol):
    """The part of the client store (gateway.store) the resolver keeps documents in."""

    async def add_client(self, client: Client, *, limit: int) -> bool: ...
    async def get_client(self, client_id: str) -> Client | None: ...
    async def replace_client(self, client: Client) -> None: ...
    async def delete_client(self, client_id: str) -> bool: ...


class FetchFailed(InvalidClient):
    """The document could not be fetched (as opposed to fetched and found invalid)."""


class SuppliedDocumentError(SettingsError):
    """A document in MCP_OAUTH_CIMD_DIR cannot be used (stops start-up)."""


def load_supplied(directory: Path, allowed_schemes: Iterable[str] = ()) -> dict[str, Client]:
    """Every `*.json` in `directory`: a client metadata document, validated like a
    fetched one; its `client_id` (an https URL) is the id it answers to."""
    if not directory.is_dir():
        raise SuppliedDocumentError(f"MCP_OAUTH_CIMD_DIR: {directory} is not a directory")
    supplied: dict[str, Client] = {}
    schemes = tuple(allowed_schemes)
    for path in sorted(directory.glob("*.json"))[: MAX_SUPPLIED + 1]:
        if len(supplied) >= MAX_SUPPLIED:
            raise SuppliedDocumentError(f"MCP_OAUTH_CIMD_DIR: more than {MAX_SUPPLIED} documents")
        try:
            if path.stat().st_size > DEFAULT_MAX_BYTES:
                raise SuppliedDocumentError(f"larger than {DEFAULT_MAX_BYTES} bytes")
            document = json.loads(path.read_text(encoding="utf-8"))
            client_id = document.get("client_id") if isinstance(document, dict) else None
            if not isinstance(client_id, str):
                raise SuppliedDocumentError("no string client_id")
            check_client_id_url(client_id)
            supplied[client_id] = client_from_document(client_id, document, schemes)
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            problem = exc.description if isinstance(exc, InvalidClient) else str(exc)
            raise SuppliedDocumentError(f"MCP_OAUTH_CIMD_DIR: {path.name}: {problem}") from None
        except InvalidClient as exc:
            raise SuppliedDocumentError(
                f"MCP_OAUTH_CIMD_DIR: {path.name}: {exc.description}"
            ) from None
    return supplied


def is_client_metadata_url(value: str) -> bool:
    """True for strings that look like a CIMD `client_id`: an https URL with a path."""
    if value[:8].lower() != "https://":
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return bool(parts.hostname) and parts.path not in ("", "/")


def check_client_id_url(value: str) -> SplitResult:
    """The draft's rules for a client identifier URL; raises InvalidClient naming the rule."""
    if len(value) > MAX_URL_LENGTH:
        raise _invalid(value, f"is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 or c == "\\" for c in value):
        raise _invalid(value, "contains whitespace, control characters or a backslash")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError:
        raise _invalid(value, "is not a valid URL") from None
    problem = _client_id_url_problem(value, parts)
    if problem:
        raise _invalid(value, problem)
    return parts


def _client_id_url_problem(value: str, parts: SplitResult) -> str | None:
    if parts.scheme != "https":
        return "must use the https scheme"
    if "@" in parts.netloc:
        return "must not contain a username or password"
    if not parts.hostname:
        return "has no host"
    if not parts.hostname.isascii():
        return "host must be ASCII (use the punycode form)"
    if "#" in value:
        return "must not contain a fragment"
    if parts.path in ("", "/"):
        return "must contain a path"
    if any(unquote(segment) in (".", "..") for segment in parts.path.split("/")):
        return "must not contain . or .. path segments"
    return None


def client_from_document(
    client_id: str, document: object, allowed_schemes: Iterable[str] = ()
) -> Client:
    """Validate a fetched metadata document and turn it into a public `Client`."""
    if not isinstance(document, dict):
        raise _invalid(client_id, "document is not a JSON object")
    if document.get("client_id") != client_id:
        raise _invalid(client_id, "document's client_id does not equal its URL")
    for name in FORBIDDEN_FIELDS:
        if name in document:
            raise _invalid(client_id, f"document must not contain {name}")
    method = document.get("token_endpoint_auth_method", "none")
    if method != "none":
        raise _invalid(client_id, "document's token_endpoint_auth_method must be none")
    return Client(
        client_id=client_id,
        redirect_uris=_redirect_uris(client_id, document.get("redirect_uris"), allowed_schemes),
        token_endpoint_auth_method="none",
        grant_types=_grant_types(client_id, document.get("grant_types")),
        response_types=_response_types(client_id, document.get("response_types")),
        scope=_scope(document.get("scope")),
        client_name=_client_name(document.get("client_name")),
        source="cimd",
        metadata=_echoed(document),
    )


def _redirect_uris(client_id: str, value: object, allowed: Iterable[str]) -> tuple[str, ...]:
    """R3, through the same validator dynamic registration uses."""
    if not isinstance(value, list) or not value:
        raise _invalid(client_id, "document must list at least one redirect_uri")
    schemes = tuple(allowed)
    for uri in value:
        try:
            validate_redirect_uri(uri, schemes)
        except InvalidRedirectUri as exc:
            raise _invalid(client_id, f"redirect_uris: {exc.description}") from None
    return tuple(value)


def _grant_types(client_id: str, value: object) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_GRANT_TYPES
    if not isinstance(value, list) or "authorization_code" not in value:
        raise _invalid(client_id, "document's grant_types must include authorization_code")
    return tuple(g for g in DEFAULT_GRANT_TYPES if g in value)


def _response_types(client_id: str, value: object) -> tuple[str, ...]:
    if value is not None and (not isinstance(value, list) or "code" not in value):
        raise _invalid(client_id, "document's response_types must include code")
    return ("code",)


def _scope(value: object) -> str:
    """The document's scopes we support; the default when it names none of them."""
    requested = set(value.split()) if isinstance(value, str) else set()
    granted = [s for s in SUPPORTED_SCOPES if s in requested]
    return " ".join(granted) if granted else DEFAULT_SCOPE


def _client_name(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()[:MAX_NAME_LENGTH]


def _echoed(document: Mapping[str, object]) -> dict[str, object]:
    """Display fields worth keeping; URI fields only when http(s), so no page links to
    a `javascript:` URL taken from a document anyone can publish."""
    echoed: dict[str, object] = {}
    for name in ECHOED_URI_FIELDS:
        value = document.get(name)
        if isinstance(value, str) and value.lower().startswith(("https://", "http://")):
            echoed[name] = value[:MAX_URL_LENGTH]
    for name in ECHOED_TEXT_FIELDS:
        value = document.get(name)
        if isinstance(value, str):
            echoed[name] = value[:MAX_NAME_LENGTH]
    contacts = document.get("contacts")
    if isinstance(contacts, list) and all(isinstance(c, str) for c in contacts):
        echoed["contacts"] = list(contacts[:10])
    return echoed


def cache_ttl(headers: Mapping[str, str], now: float) -> float:
    """Seconds a response may be reused per its caching headers (RFC 9111); 0: never."""
    directives = _cache_directives(headers.get("cache-control", ""))
    if "no-store" in directives or "no-cache" in directives:
        return 0.0
    age = _whole_number(headers.get("age")) or 0
    lifetime = _whole_number(directives.get("s-maxage"))
    if lifetime is None:
        lifetime = _whole_number(directives.get("max-age"))
    fresh = float(lifetime - age) if lifetime is not None else _expires(headers, now)
    if fresh is None:
        return DEFAULT_TTL
    return 0.0 if fresh <= 0 else min(max(fresh, MIN_TTL), MAX_TTL)


def _cache_directives(value: str) -> dict[str, str | None]:
    directives: dict[str, str | None] = {}
    for item in value.split(","):
        name, _, argument = item.strip().partition("=")
        if name:
            directives[name.strip().lower()] = argument.strip().strip('"') or None
    return directives


def _whole_number(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def _expires(headers: Mapping[str, str], now: float) -> float | None:
    if "expires" not in headers:
        return None
    expires = _http_date(headers["expires"])
    if expires is None:
        return 0.0  # RFC 9111 §5.3: an invalid Expires means already expired
    date = _http_date(headers.get("date", ""))
    return expires - (date if date is not None else now)


def _http_date(value: str) -> float | None:
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def _fetch_problem(exc: httpx.HTTPError) -> str:
    if "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return "fetch failed: its TLS certificate is not trusted"
    return f"fetch failed ({type(exc).__name__})"


def _invalid(client_id: str, problem: str) -> InvalidClient:
    return InvalidClient(f"client metadata document {client_id[:200]!r}: {problem}")


class _ClientCache:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, Client]] = OrderedDict()

    def get(self, key: str, now: float) -> Client | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: str, client: Client, expires_at: float) -> None:
        self._entries[key] = (expires_at, client)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class ClientMetadataResolver:
    """Fetches, validates and caches client metadata documents (see module doc).

    `transport` replaces the guarded transport (tests, or a deployment with its own
    egress control); the URL checks, including refusing private IP literals, still
    apply, but connection-level address checks are then the transport's job.
    """

    def __init__(
        self,
        *,
        allow_private: bool = False,
        timeout: float = 5.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        verify: ssl.SSLContext | bool = True,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
        allowed_redirect_schemes: Iterable[str] = (),
        cache_size: int = 1024,
        store: DocumentStore | None = None,
        stale_seconds: float = DEFAULT_STALE_SECONDS,
        supplied: Mapping[str, Client] | None = None,
        max_stored: int = 10_000,
    ) -> None:
        self.store = store
        self.stale_seconds = stale_seconds
        self.supplied = dict(supplied or {})
        self.max_stored = max_stored
        self.allow_private = allow_private
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.allowed_redirect_schemes = tuple(allowed_redirect_schemes)
        self._clock = clock
        self._cache = _ClientCache(cache_size)
        self._inflight: dict[str, tuple[anyio.Lock, int]] = {}
        self._http = httpx.AsyncClient(
            transport=transport or GuardedTransport(allow_private=allow_private, verify=verify),
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,
            headers={
                "Accept": "application/json",
                "Accept-Encoding": "identity",
                "User-Agent": _USER_AGENT,
            },
        )

    async def resolve(self, client_id: str) -> Client:
        supplied = self.supplied.get(client_id)
        if supplied is not None:
            return supplied
        parts = check_client_id_url(client_id)
        problem = host_problem(parts.hostname or "", allow_private=self.allow_private)
        if problem:
            raise _invalid(client_id, f"host refused: {problem}")
        if parts.port not in (None, 443) and not self.allow_private:
            raise _invalid(client_id, "host refused: only port 443 is fetched")
        cached = self._cache.get(client_id, self._clock())
        if cached is not None:
            return cached
        async with self._single_flight(client_id):
            # concurrent first requests for one URL share one fetch
            cached = self._cache.get(client_id, self._clock())
            return cached if cached is not None else await self._load(client_id)

    async def aclose(self) -> None:
        await self._http.aclose()

    @asynccontextmanager
    async def _single_flight(self, key: str) -> AsyncIterator[None]:
        lock, users = self._inflight.get(key, (anyio.Lock(), 0))
        self._inflight[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._inflight[key]
            if users == 1:
                del self._inflight[key]
            else:
                self._inflight[key] = (lock, users - 1)

    async def _load(self, client_id: str) -> Client:
        stored = await self._stored(client_id)
        now = self._clock()
        if stored is not None and _number(stored.metadata.get(FRESH_UNTIL)) > now:
            self._cache.put(client_id, stored, _number(stored.metadata.get(FRESH_UNTIL)))
            return stored
        try:
            document, ttl = await self._fetch(client_id)
        except FetchFailed as exc:
            if stored is None:
                raise
            fetched = _number(stored.metadata.get(FETCHED_AT))
            if now - fetched > self.stale_seconds:
                raise
            logger.warning(
                "client metadata document %s: %s; using the one fetched %d s ago",
                client_id[:200],
                exc.description,
                int(now - fetched),
            )
            self._cache.put(client_id, stored, now + MIN_TTL)
            return stored
        try:
            client = client_from_document(client_id, document, self.allowed_redirect_schemes)
        except InvalidClient as exc:
            logger.warning("client metadata document refused: %s", exc.description)
            if stored is not None:
                await self._forget(client_id)
            raise
        if ttl > 0:
            self._cache.put(client_id, client, now + ttl)
            await self._keep(client, stored is not None, now, now + ttl)
        elif stored is not None:
            await self._forget(client_id)
        return client

    async def _forget(self, client_id: str) -> None:
        """The stored copy is superseded (by an invalid or a `no-store` document): it
        must not come back as the stale-if-error answer (with, say, redirect URIs the
        client has since withdrawn)."""
        assert self.store is not None
        try:
            await self.store.delete_client(client_id)
        except Exception as exc:
            logger.warning("client metadata store unavailable: %s", type(exc).__name__)

    async def _stored(self, client_id: str) -> Client | None:
        if self.store is None:
            return None
        try:
            stored = await self.store.get_client(client_id)
        except Exception as exc:  # the store is a cache here: a fetch can still work
            logger.warning("client metadata store unavailable: %s", type(exc).__name__)
            return None
        return stored if stored is not None and stored.source == "cimd" else None

    async def _keep(self, client: Client, exists: bool, now: float, fresh_until: float) -> None:
        if self.store is None:
            return
        kept = replace(
            client,
            client_id_issued_at=int(now),  # the store's pruning counts from here
            metadata={**client.metadata, FETCHED_AT: now, FRESH_UNTIL: fresh_until},
        )
        try:
            if exists:
                await self.store.replace_client(kept)
            else:
                await self.store.add_client(kept, limit=self.max_stored)
        except Exception as exc:
            logger.warning("client metadata store unavailable: %s", type(exc).__name__)

    async def _fetch(self, client_id: str) -> tuple[object, float]:
        try:
            with anyio.fail_after(self.timeout):
                async with self._http.stream("GET", client_id) as response:
                    self._check_response(client_id, response)
                    body = await self._read_capped(client_id, response)
                    ttl = cache_ttl(response.headers, self._clock())
        except (TimeoutError, httpx.TimeoutException):
            raise self._failed(client_id, f"no answer within {self.timeout:g} s") from None
        except BlockedAddressError as exc:
            raise self._failed(client_id, f"host refused: {exc}") from None
        except httpx.HTTPError as exc:
            raise self._failed(client_id, _fetch_problem(exc)) from None
        except (httpx.InvalidURL, UnicodeError, ValueError):
            # An IDNA-invalid host (`xn--a.com`, `⒈example.com`) fails inside httpx.
            raise self._failed(client_id, "its host name is not valid") from None
        try:
            return json.loads(body.decode("utf-8")), ttl
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise self._failed(client_id, "document is not valid UTF-8 JSON") from None

    def _check_response(self, client_id: str, response: httpx.Response) -> None:
        if response.is_redirect:
            raise self._failed(client_id, f"answered with a redirect ({response.status_code})")
        if response.status_code != 200:
            raise self._failed(client_id, f"answered HTTP {response.status_code}")
        media = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json" and not (
            media.startswith("application/") and media.endswith("+json")
        ):
            raise self._failed(client_id, f"content type {media or 'none'} is not JSON")
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise self._failed(client_id, f"content encoding {encoding} is not accepted")
        length = _whole_number(response.headers.get("content-length"))
        if length is not None and length > self.max_bytes:
            raise self._failed(client_id, f"document is larger than {self.max_bytes} bytes")

    async def _read_capped(self, client_id: str, response: httpx.Response) -> bytes:
        body = bytearray()
        async for chunk in response.aiter_raw():
            body.extend(chunk)
            if len(body) > self.max_bytes:
                raise self._failed(client_id, f"document is larger than {self.max_bytes} bytes")
        return bytes(body)

    def _failed(self, client_id: str, problem: str) -> FetchFailed:
        logger.warning("client metadata document %s refused: %s", client_id[:200], problem)
        return FetchFailed(f"client metadata document {client_id[:200]!r}: {problem}")


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0
