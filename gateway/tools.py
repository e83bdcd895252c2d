"""What the upstream declares about its MCP tools: which ones are read-only.

The gateway asks the upstream itself (`initialize`, `notifications/initialized`,
`tools/list` on its `/mcp`, with the upstream credential) at start-up and then every
`refresh` seconds, and early when a call names a tool it does not know. It does not
read the `tools/list` responses it relays: those are streamed to the client as they
come (often as SSE), so reading them would cost every client on the hot path, and a
client that never lists tools would leave the gateway knowing nothing.

`ToolCatalog.read_only(name)` is True only for a tool the last good list annotated
`readOnlyHint: true`; the policy (gateway.policy) needs `write` for every other tool,
for a tool it has never heard of, and for every tool while no list has been had:
the rule fails closed. A failed refresh keeps the last good list.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from gateway.errors import InternalError

log = logging.getLogger("gateway.tools")

PROTOCOL_VERSION = "2025-06-18"
MAX_RESPONSE_BYTES = 2 * 1024 * 1024
MAX_PAGES = 20
MAX_TOOLS = 10_000
RETRY_SECONDS = 10.0
EARLY_REFRESH_SECONDS = 10.0
START_WAIT = 5.0


class ToolListError(InternalError):
    """The upstream's tool list could not be had or read."""


def read_only_tools(result: object) -> tuple[dict[str, bool], str | None]:
    """From one `tools/list` result: {name: readOnlyHint is true} and the next cursor.

    Pure. A tool without annotations, or with `readOnlyHint` anything but the JSON
    value true, is not read-only (MCP: the hint defaults to false)."""
    if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
        raise ToolListError("tools/list result has no 'tools' list")
    found: dict[str, bool] = {}
    for tool in result["tools"]:
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise ToolListError("tools/list result has a tool without a string 'name'")
        annotations = tool.get("annotations")
        hint = annotations.get("readOnlyHint") if isinstance(annotations, dict) else None
        # A name listed twice is read-only only if every listing says so.
        found[tool["name"]] = found.get(tool["name"], True) and hint is True
    cursor = result.get("nextCursor")
    return found, cursor if isinstance(cursor, str) and cursor else None


def jsonrpc_result(body: bytes, content_type: str, request_id: int) -> Any:
    """The `result` of the response to `request_id`, from a JSON or an SSE body. Pure."""
    if content_type.split(";")[0].strip().lower() == "text/event-stream":
        messages = [_json(data) for data in _sse_data(body.decode("utf-8", "replace"))]
    else:
        messages = [_json(body.decode("utf-8", "replace"))]
    for message in messages:
        batch = message if isinstance(message, list) else [message]
        for item in batch:
            if isinstance(item, dict) and item.get("id") == request_id:
                if "error" in item:
                    raise ToolListError(f"upstream answered an error: {item['error']!r:.200}")
                return item.get("result")
    raise ToolListError("upstream's answer holds no response to the request")


def _sse_data(text: str) -> list[str]:
    events: list[str] = []
    data: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line:
            if data:
                events.append("\n".join(data))
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        events.append("\n".join(data))
    return events


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise ToolListError("upstream's answer is not JSON") from None


class ToolCatalog:
    """The last good tool list; `None` until one has been had."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._read_only: dict[str, bool] | None = None
        self._clock = clock
        self.updated_at: float | None = None
        self.wanted = asyncio.Event()  # binds to a loop on first wait (3.10+)

    @property
    def known(self) -> bool:
        return self._read_only is not None

    def replace(self, tools: Mapping[str, bool]) -> None:
        self._read_only = dict(tools)
        self.updated_at = self._clock()

    def read_only(self, name: str) -> bool:
        tools = self._read_only
        if tools is None or name not in tools:
            self.want_refresh()
            return False
        return tools[name]

    def want_refresh(self) -> None:
        """Ask the refresher for an early list (a tool it does not know was called)."""
        self.wanted.set()

    def names(self) -> dict[str, bool]:
        return dict(self._read_only or {})


class ToolLister:
    """Fetches the upstream's tool list over MCP streamable HTTP (bounded, timed)."""

    def __init__(
        self,
        upstream: str,
        *,
        api_key: str | None,
        timeout: float = 10.0,
        path: str = "/mcp",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = upstream.rstrip("/") + path
        headers = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            "MCP-Protocol-Version": PROTOCOL_VERSION,
            "User-Agent": "memory-gateway tool-list",
        }
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            headers=headers,
            follow_redirects=False,
            trust_env=False,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def fetch(self) -> dict[str, bool]:
        try:
            async with asyncio.timeout(self.timeout * 2):
                return await self._fetch()
        except TimeoutError:
            raise ToolListError(f"no tool list within {self.timeout * 2:g} s") from None
        except httpx.HTTPError as exc:
            raise ToolListError(f"upstream unreachable ({type(exc).__name__})") from None

    async def _fetch(self) -> dict[str, bool]:
        init = {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "memory-gateway", "version": "1"},
        }
        _, session = await self._call(1, "initialize", init, None)
        await self._notify("notifications/initialized", session)
        tools: dict[str, bool] = {}
        cursor: str | None = None
        for page in range(MAX_PAGES):
            params = {"cursor": cursor} if cursor else {}
            result, _ = await self._call(2 + page, "tools/list", params, session)
            found, cursor = read_only_tools(result)
            for name, flag in found.items():
                tools[name] = tools.get(name, True) and flag
            if len(tools) > MAX_TOOLS:
                raise ToolListError(f"upstream lists more than {MAX_TOOLS} tools")
            if cursor is None:
                return tools
        raise ToolListError(f"tools/list has more than {MAX_PAGES} pages")

    async def _call(
        self, request_id: int, method: str, params: dict[str, Any], session: str | None
    ) -> tuple[Any, str | None]:
        message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        async with self._http.stream(
            "POST", self.url, content=json.dumps(message), headers=_session(session)
        ) as response:
            if response.status_code != 200:
                raise ToolListError(f"upstream answered {method} with HTTP {response.status_code}")
            body = await _read_capped(response)
            result = jsonrpc_result(body, response.headers.get("content-type", ""), request_id)
            return result, response.headers.get("mcp-session-id") or session

    async def _notify(self, method: str, session: str | None) -> None:
        message = {"jsonrpc": "2.0", "method": method}
        # The answer (202, no body, by MCP) is not read: a body, however long, is dropped.
        async with self._http.stream(
            "POST", self.url, content=json.dumps(message), headers=_session(session)
        ):
            pass


def _session(session: str | None) -> dict[str, str]:
    return {"Mcp-Session-Id": session} if session else {}


async def _read_capped(response: httpx.Response) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body.extend(chunk)
        if len(body) > MAX_RESPONSE_BYTES:
            raise ToolListError(f"tool list larger than {MAX_RESPONSE_BYTES} bytes")
    return bytes(body)


class ToolRefresher:
    """Keeps a catalog current: at start-up, every `refresh` seconds, every
    RETRY_SECONDS while no list has been had, and early (at most every
    EARLY_REFRESH_SECONDS) when a call names an unknown tool."""

    def __init__(self, catalog: ToolCatalog, lister: ToolLister, *, refresh: float) -> None:
        self.catalog = catalog
        self.lister = lister
        self.refresh = refresh
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """One attempt now, bounded by START_WAIT seconds (start-up never fails on it:
        until a list arrives every tool needs write), then the refresh task."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(START_WAIT):
                await self.once()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def once(self) -> bool:
        try:
            tools = await self.lister.fetch()
        except ToolListError as exc:
            state = "keeping the last list" if self.catalog.known else "every tool needs write"
            log.warning("upstream tool list: %s (%s)", exc, state)
            return False
        changed = tools != self.catalog.names()
        self.catalog.replace(tools)
        if changed:
            read_only = sorted(name for name, flag in tools.items() if flag)
            log.info(
                "upstream tool list: %d tools, read-only: %s",
                len(tools),
                ", ".join(read_only) or "none",
            )
        return True

    async def _run(self) -> None:
        wanted = self.catalog.wanted
        if not self.catalog.known:
            await self.once()
        while True:
            wait = self.refresh if self.catalog.known else RETRY_SECONDS
            try:
                async with asyncio.timeout(wait):
                    await wanted.wait()
                await asyncio.sleep(EARLY_REFRESH_SECONDS)  # an early refresh, rate-bounded
            except TimeoutError:
                pass
            wanted.clear()
            await self.once()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.lister.aclose()
