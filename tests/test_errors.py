"""One error hierarchy with one root, and one function that renders it."""

from __future__ import annotations

import ast
import inspect
import json
import re
from pathlib import Path

import pytest

import gateway.errors as errors
from gateway.errors import (
    GatewayError,
    HttpError,
    InternalError,
    InvalidClient,
    InvalidRequest,
    NotFound,
    OAuthError,
    TooManyRequests,
    render,
    response,
)
from gateway.netguard import BlockedAddressError
from gateway.people.provider import ProviderError
from gateway.policy import PolicyError
from gateway.proxy.app import Denied
from gateway.proxy.errors import BadGateway, ClientGone, GatewayTimeout, ProxyError
from gateway.settings import SettingsError
from gateway.store.base import StoreUnavailable
from gateway.tools import ToolListError

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"


def _exception_classes() -> list[str]:
    """`module:Class` for every class in gateway/ that derives from an exception."""
    found = []
    for path in sorted(GATEWAY.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                re.search(r"(Error|Exception|Gone|Denied|Unavailable|Session)$", ast.unparse(b))
                for b in node.bases
            ):
                found.append(f"{path.relative_to(GATEWAY.parent)}:{node.name}")
    return found


def test_every_exception_class_has_the_one_root() -> None:
    import importlib

    strays = []
    for entry in _exception_classes():
        file, name = entry.split(":")
        module = importlib.import_module(file.removesuffix(".py").replace("/", "."))
        cls = getattr(module, name)
        if not issubclass(cls, GatewayError):
            strays.append(entry)
    assert not strays
    assert len(_exception_classes()) > 30  # the scan does see the classes


def test_oauth_and_proxy_errors_are_siblings() -> None:
    assert not issubclass(BadGateway, OAuthError)
    assert not issubclass(GatewayTimeout, OAuthError)
    assert issubclass(BadGateway, ProxyError)
    assert issubclass(ProxyError, GatewayError)
    assert issubclass(OAuthError, GatewayError)
    assert not issubclass(OAuthError, ProxyError)
    assert issubclass(NotFound, HttpError)
    assert not issubclass(NotFound, OAuthError)
    for internal in (
        ClientGone,
        Denied,
        SettingsError,
        PolicyError,
        BlockedAddressError,
        ToolListError,
        ProviderError,
    ):
        assert issubclass(internal, InternalError), internal
    assert issubclass(StoreUnavailable, GatewayError)
    assert issubclass(SettingsError, ValueError)
    assert issubclass(PolicyError, ValueError)


def _header(raw: errors.RawResponse, name: bytes) -> bytes | None:
    return next((v for k, v in raw.headers if k == name), None)


def test_render_gives_rfc_json_no_store_and_the_errors_headers() -> None:
    raw = render(TooManyRequests(7, "slow down"), extra=[(b"vary", b"origin")])
    assert raw.status == 429
    assert json.loads(raw.body) == {"error": "slow_down", "error_description": "slow down"}
    assert _header(raw, b"content-type") == b"application/json"
    assert _header(raw, b"cache-control") == b"no-store"
    assert _header(raw, b"pragma") == b"no-cache"
    assert _header(raw, b"content-length") == str(len(raw.body)).encode()
    assert _header(raw, b"retry-after") == b"7"
    assert raw.headers[-1] == (b"vary", b"origin")
    assert _header(raw, b"www-authenticate") is None


def test_render_adds_a_challenge_and_honours_a_fixed_status() -> None:
    raw = render(InvalidClient("nope"), challenge='Bearer realm="x"', status=400)
    assert raw.status == 400
    assert _header(raw, b"www-authenticate") == b'Bearer realm="x"'
    status, headers, body = raw  # also the (status, headers, body) triple
    assert (status, headers, body) == (raw.status, raw.headers, raw.body)


def test_render_keeps_the_description_within_the_rfc_charset() -> None:
    raw = render(InvalidRequest('a "quoted"\\ thing\n'))
    assert json.loads(raw.body)["error_description"] == "a ?quoted?? thing?"


def test_internal_errors_never_show_their_message() -> None:
    raw = render(SettingsError("MCP_SECRET=hunter2 is wrong"))
    assert raw.status == 500
    assert json.loads(raw.body) == {"error": "server_error"}
    assert str(SettingsError("kept for the log")) == "kept for the log"


def test_the_starlette_response_is_the_same_rendering() -> None:
    error = BadGateway("the upstream is not reachable")
    reply = response(error)
    raw = render(error)
    assert (reply.status_code, reply.raw_headers, bytes(reply.body)) == raw


@pytest.mark.parametrize("path", sorted(GATEWAY.rglob("*.py")), ids=lambda p: p.name)
def test_no_other_module_builds_an_error_body(path: Path) -> None:
    """The renderer count is one: only gateway/errors.py writes `"error": ...` bodies."""
    if path == GATEWAY / "errors.py":
        return
    source = path.read_text(encoding="utf-8")
    assert not re.findall(r"""["']error(?:_description)?["']\s*:""", source)
    assert not re.findall(rb'"error(?:_description)?\\?"\s*:'.decode(), source)


def test_render_is_the_only_renderer_in_errors() -> None:
    functions = [
        n
        for n, f in inspect.getmembers(errors, inspect.isfunction)
        if f.__module__ == errors.__name__
    ]
    assert sorted(functions) == ["description_text", "render", "render_error", "response"]
