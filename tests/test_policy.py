import json
import time
from pathlib import Path

import pytest

from gateway.errors import InvalidRequest
from gateway.policy import Decision, Policy, PolicyError, load_policy, parse_json
from gateway.settings import Settings
from gateway.tools import ToolCatalog, ToolListError, read_only_tools

READ = frozenset({"read"})
WRITE = frozenset({"write"})
ADMIN = frozenset({"admin"})
READ_WRITE = frozenset({"read", "write"})
PUBLIC = Decision(public=True, scopes=frozenset(), inspect_jsonrpc=False)


def needs(scopes: frozenset[str], jsonrpc: bool = False) -> Decision:
    return Decision(public=False, scopes=scopes, inspect_jsonrpc=jsonrpc)


@pytest.fixture(scope="module")
def default() -> Policy:
    return Policy.default()


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/api/health", PUBLIC),
        ("HEAD", "/api/health", PUBLIC),
        ("POST", "/api/health", needs(WRITE)),
        ("GET", "/api/memories", needs(READ)),
        ("HEAD", "/api/memories", needs(READ)),
        ("GET", "/api/memories/abc123", needs(READ)),
        ("GET", "/api/tags", needs(READ)),
        ("GET", "/api/events", needs(READ)),
        ("GET", "/api/", needs(READ)),
        ("POST", "/api/memories", needs(WRITE)),
        ("PUT", "/api/memories/abc123", needs(WRITE)),
        ("PATCH", "/api/memories/abc123", needs(WRITE)),
        ("DELETE", "/api/memories/abc123", needs(WRITE)),
        ("POST", "/api/search", needs(READ)),
        ("POST", "/api/search/by-tag", needs(READ)),
        ("POST", "/api/search/similar/abc", needs(READ)),
        ("POST", "/api/searchable", needs(WRITE)),
        ("DELETE", "/api/search", needs(WRITE)),
        ("GET", "/api/server", needs(ADMIN)),
        ("GET", "/api/server/status", needs(READ)),
        ("HEAD", "/api/server/status", needs(READ)),
        ("POST", "/api/server/status", needs(ADMIN)),
        ("POST", "/api/server/restart", needs(ADMIN)),
        ("GET", "/api/server/version/check", needs(ADMIN)),
        ("GET", "/api/config/credentials", needs(ADMIN)),
        ("GET", "/api/config/env", needs(ADMIN)),
        ("GET", "/api/memory-stats", needs(WRITE)),
        ("GET", "/api/manage/tags/stats", needs(WRITE)),
        ("GET", "/api/manage/untagged/count", needs(WRITE)),
        ("POST", "/api/manage/bulk-delete", needs(WRITE)),
        ("GET", "/", needs(READ)),
        ("HEAD", "/", needs(READ)),
        ("GET", "/api-overview", needs(READ)),
        ("GET", "/openapi.json", needs(READ)),
        ("GET", "/docs/oauth2-redirect", needs(READ)),
        ("GET", "/mcp/tools", needs(READ)),
        ("GET", "/mcp/health", PUBLIC),
        ("GET", "/health", PUBLIC),
        ("GET", "/static/app.js", PUBLIC),
        ("GET", "/static/css/style.css", PUBLIC),
        ("POST", "/static/app.js", None),
        ("POST", "/", None),
        ("GET", "/mcp/other", None),
        ("POST", "/api/config/reload", needs(ADMIN)),
        ("DELETE", "/api/admin", needs(ADMIN)),
        ("GET", "/api/admin/users/1", needs(ADMIN)),
        ("OPTIONS", "/api/admin/x", needs(ADMIN)),
        ("GET", "/api/administrator", needs(READ)),
        ("GET", "/mcp", needs(READ)),
        ("HEAD", "/mcp", needs(READ)),
        ("POST", "/mcp", needs(READ, jsonrpc=True)),
        ("DELETE", "/mcp", needs(READ)),
        ("GET", "/mcp/", needs(READ)),
        ("POST", "/mcp/", needs(READ, jsonrpc=True)),
        ("DELETE", "/mcp/", needs(READ)),
        ("PUT", "/mcp", None),
        ("PATCH", "/mcp/", None),
        ("POST", "/mcp/extra", None),
        ("GET", "/api", None),
        ("GET", "/apix", None),
        ("GET", "/metrics", None),
        ("OPTIONS", "/api/memories", None),
        ("PROPFIND", "/api/memories", None),
        ("TRACE", "/mcp", None),
    ],
)
def test_default_policy_table(
    default: Policy, method: str, path: str, expected: Decision | None
) -> None:
    assert default.match(method, path) == expected


# What mcp-memory-service's standalone server (10.59.0) and this project's backend declare.
LISTED = {
    "tools": [
        {"name": "memory_search", "annotations": {"readOnlyHint": True}},
        {"name": "memory_list", "annotations": {"readOnlyHint": True, "openWorldHint": False}},
        {"name": "retrieve_memory", "annotations": {"readOnlyHint": True}},
        {"name": "memory_store", "annotations": {"readOnlyHint": False}},
        {"name": "memory_delete", "annotations": {"destructiveHint": True}},
        {"name": "memory_cleanup"},
        {"name": "quoted_hint", "annotations": {"readOnlyHint": "true"}},
        {"name": "one_hint", "annotations": {"readOnlyHint": 1}},
    ]
}


@pytest.fixture
def listed() -> Policy:
    catalog = ToolCatalog()
    catalog.replace(read_only_tools(LISTED)[0])
    return Policy.default(catalog)


def _call(*names: str) -> bytes:
    calls = [
        {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": name}}
        for i, name in enumerate(names)
    ]
    return json.dumps(calls[0] if len(calls) == 1 else calls).encode()


@pytest.mark.parametrize(
    "tool",
    ["store_memory", "retrieve_memory", "memory_search", "memory_store", "check_database_health"],
)
def test_every_tool_needs_write_while_the_tool_list_is_unknown(tool: str) -> None:
    assert Policy.default().jsonrpc_scopes(_call(tool), READ) == READ_WRITE


@pytest.mark.parametrize(
    ("method", "path", "browser"),
    [
        ("GET", "/api/memories", True),
        ("POST", "/api/memories", True),
        ("POST", "/api/search", True),
        ("DELETE", "/api/memories/x", True),
        ("GET", "/api/server/status", True),
        ("GET", "/api/server/config", False),
        ("DELETE", "/api/admin/x", False),
        ("GET", "/", True),
        ("GET", "/api-overview", True),
        ("GET", "/docs/index.html", True),
        ("GET", "/api/manage/stats", True),
        ("GET", "/mcp/tools", False),
        ("POST", "/mcp", False),
        ("GET", "/mcp", False),
    ],
)
def test_default_policy_browser_routes(
    default: Policy, method: str, path: str, browser: bool
) -> None:
    """The routes a signed-in person's session cookie authorises (gateway.people):
    mcp-memory-service's dashboard and the REST API as it calls it, never the MCP
    endpoint or the admin areas."""
    decision = default.match(method, path)
    assert decision is not None
    assert decision.browser is browser


def test_browser_marker_in_a_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "routes:\n"
        "  - {methods: GET, path: /, scopes: read, browser: true}\n"
        "  - {methods: GET, path: /static/*, scopes: read, browser: true}\n"
        "  - {methods: GET, path: /api/*, scopes: read}\n"
    )
    policy = Policy.load(path)
    assert policy.match("GET", "/").browser  # type: ignore[union-attr]
    assert policy.match("GET", "/static/app.js").browser  # type: ignore[union-attr]
    assert not policy.match("GET", "/api/memories").browser  # type: ignore[union-attr]
    path.write_text("routes:\n  - {methods: GET, path: /, browser: 'yes'}\n")
    with pytest.raises(PolicyError, match="'browser' must be true or false"):
        Policy.load(path)


@pytest.mark.parametrize(
    ("tool", "scopes"),
    [
        ("memory_search", READ),
        ("memory_list", READ),
        ("retrieve_memory", READ),
        ("memory_store", READ_WRITE),
        ("memory_delete", READ_WRITE),
        ("memory_cleanup", READ_WRITE),  # no annotations: fail closed
        ("quoted_hint", READ_WRITE),  # only the JSON value true counts
        ("one_hint", READ_WRITE),
        ("delete_by_tag", READ_WRITE),  # not listed (a legacy alias): fail closed
        ("Memory_Search", READ_WRITE),
        ("memory_search ", READ_WRITE),
    ],
)
def test_tool_scopes_come_from_the_upstreams_annotations(
    listed: Policy, tool: str, scopes: frozenset[str]
) -> None:
    assert listed.jsonrpc_scopes(_call(tool), READ) == scopes


def test_an_unknown_tool_asks_for_an_early_refresh(listed: Policy) -> None:
    listed.catalog.wanted.clear()
    listed.jsonrpc_scopes(_call("memory_search"), READ)
    assert not listed.catalog.wanted.is_set()
    listed.jsonrpc_scopes(_call("brand_new_tool"), READ)
    assert listed.catalog.wanted.is_set()


def test_policy_file_overrides_tools_both_ways_and_to_admin(tmp_path: Path) -> None:
    text = (
        "extends: default\n"
        "tools:\n  memory_cleanup: read\n  memory_search: [read, write]\n"
        "  memory_store: admin\n  'memory_consolidate*': admin\n"
    )
    catalog = ToolCatalog()
    catalog.replace(read_only_tools(LISTED)[0])
    policy = Policy.load(_write(tmp_path, "p.yaml", text), catalog)
    assert policy.jsonrpc_scopes(_call("memory_cleanup"), READ) == READ  # unannotated → read
    assert policy.jsonrpc_scopes(_call("memory_search"), READ) == READ_WRITE  # read-only → write
    assert policy.jsonrpc_scopes(_call("memory_store"), READ) == READ | ADMIN
    assert policy.jsonrpc_scopes(_call("memory_consolidate_now"), READ) == READ | ADMIN
    assert policy.jsonrpc_scopes(_call("memory_list"), READ) == READ  # the annotation still counts
    assert policy.jsonrpc_scopes(_call("memory_delete"), READ) == READ_WRITE


def test_tools_list_results_are_read_strictly() -> None:
    assert read_only_tools({"tools": [], "nextCursor": "abc"}) == ({}, "abc")
    assert read_only_tools({"tools": [{"name": "a"}], "nextCursor": ""}) == ({"a": False}, None)
    bad: object
    for bad in ({}, {"tools": {}}, {"tools": [{"name": 3}]}, {"tools": ["a"]}, []):
        with pytest.raises(ToolListError):
            read_only_tools(bad)


@pytest.mark.parametrize(
    "message",
    [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 3, "result": {}},
        {"jsonrpc": "2.0", "id": 4, "method": "resources/read", "params": {"name": "store_memory"}},
    ],
)
def test_d6_other_methods_need_the_route_scope(default: Policy, message: object) -> None:
    assert default.jsonrpc_scopes(json.dumps(message).encode(), READ) == READ


def test_d6_batch_needs_the_union_of_its_calls(listed: Policy) -> None:
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "memory_search"}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "memory_store"}},
    ]
    assert listed.jsonrpc_scopes(json.dumps(batch).encode(), READ) == READ_WRITE
    read_only = batch[:2]
    assert listed.jsonrpc_scopes(json.dumps(read_only).encode(), READ) == READ
    # a write call hidden late in a long batch of read-only ones is still found
    many = [batch[0]] * 50 + [batch[2]]
    assert listed.jsonrpc_scopes(json.dumps(many).encode(), READ) == READ_WRITE


def test_d6_escaped_method_and_tool_names_are_still_recognised(listed: Policy) -> None:
    body = b'{"method":"tools\\/call","params":{"name":"\\u006demory_search"}}'
    assert listed.jsonrpc_scopes(body, READ) == READ


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        (b"42", "object or a non-empty batch"),
        (b'"tools/call"', "object or a non-empty batch"),
        (b"null", "object or a non-empty batch"),
        (b"[]", "object or a non-empty batch"),
        (b"[1, 2]", "batch entry must be an object"),
        (b'{"method": "tools/call"}', "params.name"),
        (b'{"method": "tools/call", "params": []}', "params.name"),
        (b'{"method": "tools/call", "params": {"name": 7}}', "params.name"),
        (b'[{"method": "tools/list"}, {"method": "tools/call", "params": {}}]', "params.name"),
    ],
)
def test_malformed_jsonrpc_is_invalid_request(default: Policy, body: bytes, reason: str) -> None:
    with pytest.raises(InvalidRequest, match=reason) as caught:
        default.jsonrpc_scopes(body, READ)
    assert caught.value.status_code == 400


# --- Policy files -------------------------------------------------------------------------

YAML_POLICY = """
extends: default
routes:
  - methods: [GET]
    path: /metrics
    public: true
  - methods: GET POST
    path: /api/reports/*
    scopes: [admin]
  - methods: DELETE
    path: /api/memories/*
    deny: true
  - methods: "*"
    path: /api/search
    scopes: read write
tools:
  retrieve_memory: [admin]
  "export_*": admin
"""

TOML_POLICY = """
[[routes]]
methods = ["GET"]
path = "/v1/*"
scopes = ["read"]

[[routes]]
methods = ["POST"]
path = "/rpc"
scopes = ["read"]
jsonrpc = true

[tools]
"dangerous_*" = ["admin"]
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_policy_extends_the_default(tmp_path: Path) -> None:
    policy = Policy.load(_write(tmp_path, "policy.yaml", YAML_POLICY))
    assert policy.match("GET", "/metrics") == PUBLIC
    assert policy.match("GET", "/api/reports/2024") == needs(ADMIN)
    assert policy.match("DELETE", "/api/memories/abc") is None
    assert policy.match("PUT", "/api/memories/abc") == needs(WRITE)  # default kept
    # A method-specific default rule at the same path still wins over the file's "*".
    assert policy.match("POST", "/api/search") == needs(READ)
    assert policy.match("GET", "/api/search") == needs(READ_WRITE)
    assert policy.match("GET", "/api/health") == PUBLIC
    assert policy.tool_scopes("retrieve_memory") == ADMIN
    assert policy.tool_scopes("export_all") == ADMIN
    assert policy.tool_scopes("update_memory") == WRITE  # not listed: fail closed


def test_toml_policy_replaces_the_default(tmp_path: Path) -> None:
    policy = Policy.load(_write(tmp_path, "policy.toml", TOML_POLICY))
    assert policy.match("GET", "/v1/things") == needs(READ)
    assert policy.match("POST", "/rpc") == needs(READ, jsonrpc=True)
    assert policy.match("GET", "/api/health") is None
    assert policy.match("POST", "/mcp") is None
    assert policy.tool_scopes("store_memory") == WRITE  # no list yet: fail closed
    body = b'{"method":"tools/call","params":{"name":"dangerous_drop"}}'
    assert policy.jsonrpc_scopes(body, READ) == frozenset({"read", "admin"})


def test_file_rule_replaces_the_same_default_rule(tmp_path: Path) -> None:
    text = "extends: default\nroutes:\n  - {methods: GET, path: /api/*, scopes: [admin]}\n"
    policy = Policy.load(_write(tmp_path, "p.yml", text))
    assert policy.match("GET", "/api/memories") == needs(ADMIN)
    assert policy.match("POST", "/api/memories") == needs(WRITE)


def test_most_specific_rule_wins_regardless_of_file_order(tmp_path: Path) -> None:
    text = """
routes:
  - {methods: "*", path: "/*", scopes: [admin]}
  - {methods: GET, path: "/a/*", scopes: [read]}
  - {methods: GET, path: "/a/b*", scopes: [write]}
  - {methods: "*", path: "/a/b/c", public: true}
  - {methods: POST, path: "/a/*", scopes: [write]}
  - {methods: "*", path: "/a/*", scopes: [admin]}
"""
    policy = Policy.load(_write(tmp_path, "order.yaml", text))
    assert policy.match("GET", "/a/b/c") == PUBLIC  # exact beats every prefix
    assert policy.match("GET", "/a/bc") == needs(WRITE)  # longer prefix
    assert policy.match("GET", "/a/x") == needs(READ)  # named method beats "*"
    assert policy.match("DELETE", "/a/x") == needs(ADMIN)  # "*" at the same prefix
    assert policy.match("PUT", "/z") == needs(ADMIN)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("p.json", "{}", "must end in .yaml, .yml or .toml"),
        ("p.yaml", "routes: [", "not valid YAML"),
        ("p.toml", "routes = [", "not valid TOML"),
        ("p.yaml", "- a\n- b\n", "must be a mapping"),
        ("p.yaml", "rules: []\n", "unknown keys ['rules']"),
        ("p.yaml", "extends: parent\n", "extends must be 'default' or 'none'"),
        ("p.yaml", "routes: {}\n", "'routes' must be a list"),
        ("p.yaml", "routes: [42]\n", "routes[0]: a rule must be a mapping"),
        (
            "p.yaml",
            "routes:\n  - {methods: GET, path: /x, scope: read}\n",
            "routes[0] (/x): unknown keys ['scope']",
        ),
        (
            "p.yaml",
            "routes:\n  - {methods: GET, path: /x, scopes: [read, rw]}\n",
            "routes[0] (/x): unknown scopes ['rw']",
        ),
        (
            "p.yaml",
            "routes:\n  - {methods: GET, path: /x, scopes: offline_access}\n",
            "unknown scopes ['offline_access']",
        ),
        (
            "p.yaml",
            "routes:\n  - {methods: FETCH, path: /x, scopes: read}\n",
            "unknown methods ['FETCH']",
        ),
        ("p.yaml", "routes:\n  - {methods: HEAD, path: /x}\n", "HEAD is matched by GET"),
        ("p.yaml", "routes:\n  - {methods: [], path: /x}\n", "'methods' must be"),
        ("p.yaml", "routes:\n  - {path: /x, scopes: read}\n", "'methods' must be"),
        ("p.yaml", "routes:\n  - {methods: GET, scopes: read}\n", "'path' must be a string"),
        ("p.yaml", "routes:\n  - {methods: GET, path: x}\n", "'path' must be a string"),
        ("p.yaml", "routes:\n  - {methods: GET, path: /a/*/b}\n", "only allowed as the last"),
        ("p.yaml", "routes:\n  - {methods: GET, path: /a//b}\n", "not canonical"),
        ("p.yaml", "routes:\n  - {methods: GET, path: /a/../b}\n", "not canonical"),
        ("p.yaml", "routes:\n  - {methods: GET, path: '/a b'}\n", "spaces"),
        ("p.yaml", "routes:\n  - {methods: GET, path: '/a?x=1'}\n", "'?' and '#'"),
        ("p.yaml", "routes:\n  - {methods: GET, path: /x, public: yes please}\n", "true or false"),
        (
            "p.yaml",
            "routes:\n  - {methods: GET, path: /x, public: true, scopes: read}\n",
            "public or deny rule cannot also need scopes",
        ),
        (
            "p.yaml",
            "routes:\n  - {methods: GET, path: /x, public: true, deny: true}\n",
            "both public and deny",
        ),
        (
            "p.yaml",
            "routes:\n  - {methods: GET, path: /x}\n  - {methods: [POST, GET], path: /x}\n",
            "routes[1] (/x): duplicate rule for GET /x",
        ),
        ("p.yaml", "tools: [store_memory]\n", "'tools' must map"),
        ("p.yaml", "tools:\n  store_memory: [delete]\n", "tools['store_memory']: unknown scopes"),
        ("p.yaml", "tools:\n  'bad name': [write]\n", "bad tool name 'bad name'"),
        ("p.toml", "[[routes]]\nmethods = 'GET'\npath = '/x'\nscopes = 1\n", "'scopes' must be"),
    ],
)
def test_bad_policy_file_names_the_file_and_entry(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(PolicyError) as caught:
        Policy.load(path)
    assert str(caught.value).startswith(f"{path}:")
    assert message in str(caught.value)


def test_missing_policy_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        Policy.load(tmp_path / "absent.yaml")


def test_load_policy_follows_settings(tmp_path: Path) -> None:
    assert load_policy(Settings()).match("GET", "/api/health") == PUBLIC
    path = _write(tmp_path, "policy.toml", TOML_POLICY)
    settings = Settings.from_env({"MCP_GATEWAY_POLICY": str(path)})
    assert load_policy(settings).match("GET", "/api/health") is None
    assert load_policy(settings).match("GET", "/v1/x") == needs(READ)


def test_match_is_fast_enough_for_the_hot_path(default: Policy) -> None:
    paths = ["/api/memories/abc", "/api/health", "/mcp", "/api/admin/x", "/nope"]
    rounds = 2000
    start = time.perf_counter()
    for _ in range(rounds):
        for path in paths:
            default.match("GET", path)
    per_call = (time.perf_counter() - start) / (rounds * len(paths))
    assert per_call < 20e-6  # generous bound; measured well under 1 µs


@pytest.mark.parametrize(
    "body",
    [
        b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"x","arguments":{}}}',
        b' {"method":"tools/call"}',
        b'{"method":"tools/call"} ',
        b'\n[{"a":1},{"b":[1,2.5,null,true]}]\r\n',
        b'{"a":1}{"b":2}',
        b'{"a":1} x',
        b"{",
        b"",
        b"   ",
        b"42",
        b'"\\u00e9t\\u00e9"',
        '{"name":"été"}'.encode(),
        b'{"a":1,"a":2}',
        b"[NaN, Infinity]",
        b"\xef\xbb\xbf{}",
        '{"method":"tools/call"}'.encode("utf-16"),
        '{"method":"tools/call"}'.encode("utf-32-le"),
        b"\xff\xfe\x00",
        b'{"a":"\xff"}',
    ],
)
def test_the_body_parser_answers_as_json_loads(body: bytes) -> None:
    """parse_json's shortcut (policy.py) gives json.loads's value, or refuses what it
    refuses (ValueError: the proxy's 400)."""
    try:
        expected = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        with pytest.raises((json.JSONDecodeError, UnicodeDecodeError)):
            parse_json(body)
        return
    assert parse_json(body) == expected
