"""Request bodies: size-capped reading, form and JSON parsing (RFC 6749 §3.2, RFC 7591)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import parse_qsl

from starlette.requests import Request

from gateway.errors import InvalidClientMetadata, InvalidRequest, InvalidTarget, PayloadTooLarge
from gateway.oauth.resource import canonical_resource

FORM_TYPE = "application/x-www-form-urlencoded"


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or PayloadTooLarge (413) as soon as it exceeds `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_form(request: Request, limit: int) -> dict[str, str]:
    """A form-encoded body with each parameter at most once, or InvalidRequest."""
    if media_type(request) != FORM_TYPE:
        raise InvalidRequest(f"the request body must be {FORM_TYPE}")
    return parse_form(await read_body(request, limit))


def parse_form(body: bytes) -> dict[str, str]:
    """Each parameter at most once (RFC 6749 §3.2), except `resource` (RFC 8707 §2),
    which may repeat the same value; two different resources → InvalidTarget, since
    this gateway protects one resource."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("malformed form body") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name == "resource" and name in form:
            if canonical_resource(value) != canonical_resource(form[name]):
                raise InvalidTarget("more than one resource was requested")
            continue
        if name in form:
            raise InvalidRequest(f"parameter {name!r} included more than once")
        form[name] = value
    return {k: v for k, v in form.items() if v != ""}


async def read_json_object(request: Request, limit: int) -> dict[str, object]:
    if media_type(request) != "application/json":
        raise InvalidClientMetadata("the request body must be application/json")
    body = await read_body(request, limit)
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidClientMetadata("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidClientMetadata("the request body must be a JSON object")
    return data


def single_params(query: Mapping[str, str], multi: list[tuple[str, str]]) -> dict[str, str]:
    """Query parameters, each at most once (RFC 6749 §3.1); `resource` may repeat."""
    seen: set[str] = set()
    for name, _ in multi:
        if name in seen and name != "resource":
            raise InvalidRequest(f"parameter {name!r} included more than once")
        seen.add(name)
    return {k: v for k, v in query.items() if v != ""}
