"""Route policy: which scopes a request needs (docs/policy.md, PROTOCOL D6).

A policy maps method + canonical path to a `Decision` and JSON-RPC tool names to scopes.
Everything is validated and indexed at start-up; `match` is a dict lookup plus a short
scan of path prefixes, longest first. A request no rule matches is denied (fail closed).

Path patterns: `/a/b` matches exactly that path; a trailing `*` (`/a/b/*`, `/a/b*`)
matches every path starting with the text before it. The most specific rule wins: an
exact rule before any prefix, a longer prefix before a shorter one, a rule naming the
method before one for any method (`*`). HEAD is matched by GET rules.

Tool scopes (a `tools/call` on a `jsonrpc` route) fail closed: a tool the policy names
needs what the policy says (either way, `admin` too); any other tool needs nothing
beyond the route's scopes only when the upstream's tool list (gateway.tools) annotates
it `readOnlyHint: true`, and `write` otherwise: unannotated, unknown, or no list yet.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.errors import InternalError, InvalidRequest
from gateway.models import RESOURCE_SCOPES, SUPPORTED_SCOPES
from gateway.settings import Settings
from gateway.tools import ToolCatalog

ANY = "*"
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", ANY})
ROUTE_KEYS = frozenset({"methods", "path", "scopes", "public", "jsonrpc", "deny", "browser"})
TOP_KEYS = frozenset({"extends", "routes", "tools", "people"})
_TOOL_PATTERN = re.compile(r"[A-Za-z0-9_.\-/*]{1,128}")
_NONE: frozenset[str] = frozenset()
_WRITE = frozenset({"write"})

DEFAULT_POLICY: dict[str, Any] = {
    "routes": [
        {"methods": "GET", "path": "/api/health", "public": True},
        {"methods": "GET", "path": "/api/*", "scopes": "read", "browser": True},
        {"methods": "GET", "path": "/api/events", "scopes": "read", "browser": True},
        {"methods": "POST PUT PATCH DELETE", "path": "/api/*", "scopes": "write", "browser": True},
        {"methods": "POST", "path": "/api/search", "scopes": "read", "browser": True},
        {"methods": "POST", "path": "/api/search/*", "scopes": "read", "browser": True},
        *(
            {"methods": ANY, "path": path, "scopes": "admin"}
            for area in ("server", "config", "admin")
            for path in (f"/api/{area}", f"/api/{area}/*")
        ),
        # mcp-memory-service's own rules where they are stricter than the above, and
        # the routes it serves outside /api (docs/policy.md lists every upstream route).
        {"methods": "GET", "path": "/api/server/status", "scopes": "read", "browser": True},
        {"methods": "GET", "path": "/api/memory-stats", "scopes": "write", "browser": True},
        {"methods": "GET", "path": "/api/manage/*", "scopes": "write", "browser": True},
        {"methods": "GET", "path": "/health", "public": True},
        {"methods": "GET", "path": "/mcp/health", "public": True},
        {"methods": "GET", "path": "/static/*", "public": True},
        *(
            # The dashboard and its pages: a signed-in person's session also works.
            {"methods": "GET", "path": path, "scopes": "read", "browser": path != "/mcp/tools"}
            for path in ("/", "/api-overview", "/openapi.json", "/docs/*", "/mcp/tools")
        ),
        *(
            rule
            for path in ("/mcp", "/mcp/")
            for rule in (
                {"methods": "GET DELETE", "path": path, "scopes": "read"},
                {"methods": "POST", "path": path, "scopes": "read", "jsonrpc": True},
            )
        ),
    ],
    "tools": {},
}


class PolicyError(InternalError, ValueError):
    """The policy file is missing, unreadable or has an invalid entry."""


@dataclass(frozen=True, slots=True)
class Decision:
    public: bool
    scopes: frozenset[str]
    inspect_jsonrpc: bool
    # `browser: true`: a signed-in person's session cookie also authorises the route
    # (gateway.people.session), with that person's scopes; bearer tokens work as ever.
    browser: bool = field(default=False, compare=False)


_DENY = Decision(public=False, scopes=frozenset({"<deny>"}), inspect_jsonrpc=False)
MethodTable = dict[str, Decision]


@dataclass(frozen=True, slots=True)
class _Spec:
    """A validated policy document: route rules keyed by (method, pattern), tools by glob."""

    routes: dict[tuple[str, str], Decision]
    tools: dict[str, frozenset[str]]
    people: tuple[Ceiling, ...] = ()


@dataclass(frozen=True, slots=True)
class Ceiling:
    """`people:` entry: signed-in people in these groups or with these emails may hold
    at most these scopes (gateway.people; `admin` comes only from MCP_OAUTH_ADMIN_GROUPS)."""

    groups: frozenset[str]
    emails: frozenset[str]
    scopes: frozenset[str]


class Policy:
    def __init__(self, spec: _Spec, catalog: ToolCatalog | None = None) -> None:
        self.catalog = catalog if catalog is not None else ToolCatalog()
        self._exact: dict[str, MethodTable] = {}
        prefixes: dict[str, MethodTable] = {}
        for (method, pattern), decision in spec.routes.items():
            if pattern.endswith("*"):
                prefixes.setdefault(pattern[:-1], {})[method] = decision
            else:
                self._exact.setdefault(pattern, {})[method] = decision
        ordered = sorted(prefixes.items(), key=lambda item: -len(item[0]))
        self._prefixes: tuple[tuple[str, MethodTable], ...] = tuple(ordered)
        self.people = spec.people
        self._tools = {k: v for k, v in spec.tools.items() if "*" not in k}
        self._globs = tuple(
            (re.compile(".*".join(map(re.escape, k.split("*")))), v)
            for k, v in spec.tools.items()
            if "*" in k
        )

    @classmethod
    def default(cls, catalog: ToolCatalog | None = None) -> Policy:
        return cls(_parse(DEFAULT_POLICY, "<default policy>"), catalog)

    @classmethod
    def load(cls, path: Path, catalog: ToolCatalog | None = None) -> Policy:
        data = _read(path)
        spec = _parse(data, str(path))
        if data.get("extends") == "default":
            spec = _extend(_parse(DEFAULT_POLICY, "<default policy>"), spec)
        return cls(spec, catalog)

    def match(self, method: str, path: str) -> Decision | None:
        """The decision for a canonical path; None when no rule allows it (deny)."""
        if method == "HEAD":
            method = "GET"
        table = self._exact.get(path)
        if table is not None:
            decision = table.get(method) or table.get(ANY)
            if decision is not None:
                return None if decision is _DENY else decision
        for prefix, table in self._prefixes:
            if path.startswith(prefix):
                decision = table.get(method) or table.get(ANY)
                if decision is not None:
                    return None if decision is _DENY else decision
        return None

    def tool_scopes(self, name: str) -> frozenset[str]:
        """Scopes a `tools/call` of `name` needs beyond the route's: the policy's exact
        name, then its globs, then the upstream's annotation (read-only → nothing more),
        else `write` (fail closed)."""
        scopes = self._tools.get(name)
        if scopes is not None:
            return scopes
        for pattern, globbed in self._globs:
            if pattern.fullmatch(name):
                return globbed
        return _NONE if self.catalog.read_only(name) else _WRITE

    def jsonrpc_scopes(self, body: bytes, base: frozenset[str]) -> frozenset[str]:
        """Union of `base` and the scopes of every `tools/call` in a message or batch.

        Malformed JSON-RPC is refused at the edge (InvalidRequest → 400) rather than
        forwarded: a body the gateway cannot read is a body it cannot authorise.
        """
        try:
            message = parse_json(body)
        except (ValueError, RecursionError):
            raise InvalidRequest("the request body is not valid JSON") from None
        if isinstance(message, dict):
            extra = self._message_scopes(message)
            return base | extra if extra else base
        if not isinstance(message, list) or not message:
            raise InvalidRequest("a JSON-RPC body must be an object or a non-empty batch array")
        required = base
        for item in message:
            if not isinstance(item, dict):
                raise InvalidRequest("every JSON-RPC batch entry must be an object")
            extra = self._message_scopes(item)
            if extra:
                required = required | extra
        return required

    def _message_scopes(self, message: dict[str, Any]) -> frozenset[str]:
        if message.get("method") != "tools/call":
            return _NONE
        params = message.get("params")
        name = params.get("name") if isinstance(params, dict) else None
        if not isinstance(name, str):
            raise InvalidRequest("tools/call needs a string params.name")
        return self.tool_scopes(name)


_DECODER = json.JSONDecoder()
# The decoder's C scanner (set in JSONDecoder.__init__; typeshed does not declare it).
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


def parse_json(body: bytes) -> Any:
    """`json.loads(body)`, same results and errors (ValueError), cheaper for what MCP
    sends: UTF-8 decoded here (no encoding detection) and a body that is one JSON value
    from its first byte to its last scanned directly (JSONDecoder.decode's whitespace
    matching and checks cost more than the scan of a small tools/call). A body that may
    be UTF-16/32 or has a BOM takes json.loads; one with whitespace around the value or
    anything after it takes JSONDecoder.decode, which accepts or refuses it."""
    if body[:3] == b"\xef\xbb\xbf" or b"\x00" in body[:4]:
        return json.loads(body)
    text = body.decode("utf-8")
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:  # whitespace first, or no JSON value: decode says which
        return _DECODER.decode(text)
    if end != len(text):
        return _DECODER.decode(text)
    return value


def load_policy(settings: Settings, catalog: ToolCatalog | None = None) -> Policy:
    """The policy file named by MCP_GATEWAY_POLICY, or the built-in default."""
    if settings.policy_file is None:
        return Policy.default(catalog)
    return Policy.load(settings.policy_file, catalog)


def _extend(base: _Spec, spec: _Spec) -> _Spec:
    """The default with the file's rules added; a file rule replaces the same (method, path)
    or tool pattern, and the file's globs are tried before the default's."""
    tools = {**spec.tools, **{k: v for k, v in base.tools.items() if k not in spec.tools}}
    return _Spec(routes={**base.routes, **spec.routes}, tools=tools, people=spec.people)


def _read(path: Path) -> dict[str, Any]:
    suffix = path.suffix.lower()
    if suffix not in {".yaml", ".yml", ".toml"}:
        raise PolicyError(f"{path}: policy files must end in .yaml, .yml or .toml")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read the policy file: {exc}") from None
    try:
        data = tomllib.loads(text) if suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise PolicyError(f"{path}: not valid {suffix[1:].upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: the policy must be a mapping with 'routes' and 'tools'")
    return data


def _parse(data: Mapping[str, Any], source: str) -> _Spec:
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise PolicyError(f"{source}: unknown keys {sorted(unknown)}; known: {sorted(TOP_KEYS)}")
    if data.get("extends", "none") not in {"default", "none"}:
        raise PolicyError(f"{source}: extends must be 'default' or 'none'")
    routes = data.get("routes", [])
    if not isinstance(routes, list):
        raise PolicyError(f"{source}: 'routes' must be a list of rules")
    parsed: dict[tuple[str, str], Decision] = {}
    for index, entry in enumerate(routes):
        parsed.update(_route(entry, f"{source}: routes[{index}]", parsed))
    tools = data.get("tools", {})
    if not isinstance(tools, dict):
        raise PolicyError(f"{source}: 'tools' must map tool names (or globs) to scopes")
    return _Spec(
        routes=parsed,
        tools={_tool(k, source): _scopes(v, f"{source}: tools[{k!r}]") for k, v in tools.items()},
        people=_people(data.get("people", []), source),
    )


def _people(entries: object, source: str) -> tuple[Ceiling, ...]:
    if not isinstance(entries, list):
        raise PolicyError(f"{source}: 'people' must be a list of {{groups, emails, scopes}}")
    ceilings = []
    for index, entry in enumerate(entries):
        where = f"{source}: people[{index}]"
        if not isinstance(entry, dict) or set(entry) - {"groups", "emails", "scopes"}:
            raise PolicyError(f"{where}: an entry has 'groups' and/or 'emails', and 'scopes'")
        names = {}
        for key in ("groups", "emails"):
            value = entry.get(key, [])
            value = value.replace(",", " ").split() if isinstance(value, str) else value
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise PolicyError(f"{where}: '{key}' must be a list of names")
            names[key] = frozenset(v.lower() if key == "emails" else v for v in value)
        if not names["groups"] and not names["emails"]:
            raise PolicyError(f"{where}: name some 'groups' or 'emails'")
        raw = entry.get("scopes", "")
        listed = raw.split() if isinstance(raw, str) else raw
        valid = isinstance(listed, list) and all(isinstance(n, str) for n in listed)
        scopes = frozenset(listed) if valid else frozenset()
        if not scopes or not scopes <= set(SUPPORTED_SCOPES):
            raise PolicyError(f"{where}: 'scopes' must name some of {', '.join(SUPPORTED_SCOPES)}")
        if "admin" in scopes:
            raise PolicyError(f"{where}: admin comes only from MCP_OAUTH_ADMIN_GROUPS")
        ceilings.append(Ceiling(names["groups"], names["emails"], scopes))
    return tuple(ceilings)


def _route(
    entry: object, where: str, seen: Mapping[tuple[str, str], Decision]
) -> dict[tuple[str, str], Decision]:
    """One rule, expanded to one entry per method; a repeated (method, path) is an error."""
    if not isinstance(entry, dict):
        raise PolicyError(f"{where}: a rule must be a mapping with 'methods', 'path', 'scopes'")
    path = _pattern(entry.get("path"), where)
    where = f"{where} ({path})"
    unknown = set(entry) - ROUTE_KEYS
    if unknown:
        raise PolicyError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(ROUTE_KEYS)}")
    methods = _methods(entry.get("methods"), where)
    flags = {k: entry.get(k, False) for k in ("public", "jsonrpc", "deny", "browser")}
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise PolicyError(f"{where}: '{name}' must be true or false")
    scopes = _scopes(entry.get("scopes", ""), where)
    if (flags["public"] or flags["deny"]) and (scopes or flags["jsonrpc"]):
        raise PolicyError(f"{where}: a public or deny rule cannot also need scopes or jsonrpc")
    if flags["public"] and flags["deny"]:
        raise PolicyError(f"{where}: a rule cannot be both public and deny")
    decision = (
        _DENY
        if flags["deny"]
        else Decision(flags["public"], scopes, flags["jsonrpc"], browser=flags["browser"])
    )
    for method in methods:
        if (method, path) in seen:
            raise PolicyError(f"{where}: duplicate rule for {method} {path}")
    return {(method, path): decision for method in methods}


def _pattern(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise PolicyError(f"{where}: 'path' must be a string starting with '/'")
    problem = _pattern_problem(value)
    if problem:
        raise PolicyError(f"{where}: bad path pattern {value!r}: {problem}")
    return value


def _pattern_problem(value: str) -> str | None:
    if len(value) > 2048:
        return "longer than 2048 characters"
    if any(c <= " " or c == "\x7f" or c in "?#" for c in value):
        return "spaces, control characters, '?' and '#' are not allowed"
    if "*" in value[:-1]:
        return "'*' is only allowed as the last character"
    segments = value.rstrip("*").split("/")[1:-1]
    if "" in segments or "." in segments or ".." in segments:
        return "not canonical ('//', '.' or '..' segments never match a canonical path)"
    return None


def _methods(value: object, where: str) -> frozenset[str]:
    names = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise PolicyError(f"{where}: 'methods' must be a method, a list of methods, or '*'")
    upper = frozenset(n.upper() for n in names)
    if "HEAD" in upper:
        raise PolicyError(f"{where}: HEAD is matched by GET rules; list GET instead")
    bad = upper - METHODS
    if bad:
        raise PolicyError(f"{where}: unknown methods {sorted(bad)}; known: {sorted(METHODS)}")
    return upper


def _scopes(value: object, where: str) -> frozenset[str]:
    names = value.split() if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise PolicyError(f"{where}: 'scopes' must be a list of scope names or a string")
    unknown = set(names) - set(RESOURCE_SCOPES)
    if unknown:
        raise PolicyError(
            f"{where}: unknown scopes {sorted(unknown)}; known: {', '.join(RESOURCE_SCOPES)}"
        )
    return frozenset(names)


def _tool(name: object, source: str) -> str:
    if not isinstance(name, str) or not _TOOL_PATTERN.fullmatch(name):
        raise PolicyError(
            f"{source}: tools: bad tool name {name!r} (letters, digits, _ . - / and '*' globs)"
        )
    return name
