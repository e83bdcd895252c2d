"""Request bodies and query strings → domain values, or an error naming the field."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from backend.errors import BadRequest, InvalidField, PayloadTooLarge
from backend.identity import ANONYMOUS, Identity
from backend.models import JSONObject, MemoryUpdate, NewMemory, PageRequest

MAX_PAGE_SIZE = 100
MAX_RESULTS = 100
MAX_TAG_RESULTS = 1000
MAX_PAGE = 10**12  # keeps the SQL OFFSET inside a 64-bit integer


def parse_json_object(body: bytes) -> JSONObject:
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest("request body must be a JSON object")
    return value


def new_memory(body: JSONObject, max_content: int, stored_by: Identity = ANONYMOUS) -> NewMemory:
    return NewMemory(
        content=content(body.get("content"), max_content),
        tags=tags(body.get("tags"), "tags", required=False),
        memory_type=optional_str(body.get("memory_type"), "memory_type"),
        metadata=metadata(body.get("metadata")),
        stored_by=stored_by,
    )


def memory_update(body: JSONObject) -> MemoryUpdate:
    if "content" in body:
        raise InvalidField("content", "is immutable (it defines the hash); store a new memory")
    raw_tags = body.get("tags")
    return MemoryUpdate(
        tags=None if raw_tags is None else tags(raw_tags, "tags", required=False),
        memory_type=optional_str(body.get("memory_type"), "memory_type"),
        metadata=None if body.get("metadata") is None else metadata(body["metadata"]),
    )


def search_query(body: JSONObject) -> tuple[str, int]:
    query = body.get("query")
    if query is None:
        raise InvalidField("query", "field required")
    if not isinstance(query, str) or not query.strip():
        raise InvalidField("query", "must be a non-empty string")
    return query, bounded_int(body.get("n_results"), "n_results", 5, MAX_RESULTS)


def tag_query(body: JSONObject) -> tuple[tuple[str, ...], bool, int]:
    match_all = body.get("match_all", False)
    if not isinstance(match_all, bool):
        raise InvalidField("match_all", "must be a boolean")
    limit = bounded_int(body.get("limit"), "limit", MAX_TAG_RESULTS, MAX_TAG_RESULTS)
    return tags(body.get("tags"), "tags", required=True), match_all, limit


def page_request(params: Mapping[str, str]) -> PageRequest:
    return PageRequest(
        page=query_int(params.get("page"), "page", 1, MAX_PAGE),
        page_size=query_int(params.get("page_size"), "page_size", 10, MAX_PAGE_SIZE),
        tag=params.get("tag") or None,
        memory_type=params.get("memory_type") or None,
    )


def content(value: Any, max_content: int) -> str:
    if value is None:
        raise InvalidField("content", "field required")
    if not isinstance(value, str):
        raise InvalidField("content", "must be a string")
    if not value.strip():
        raise InvalidField("content", "must not be empty")
    if len(_utf8(value, "content")) > max_content:
        raise PayloadTooLarge(f"content exceeds {max_content} bytes", field="content")
    return value


def tags(value: Any, field: str, *, required: bool) -> tuple[str, ...]:
    if value is None and not required:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise InvalidField(field, "must be a list of strings")
    for tag in value:
        _utf8(tag, field)
    cleaned = tuple(dict.fromkeys(tag.strip() for tag in value if tag.strip()))
    if required and not cleaned:
        raise InvalidField(field, "must contain at least one tag")
    return cleaned


def optional_str(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidField(field, "must be a string")
    _utf8(value, field)
    return value.strip() or None


def metadata(value: Any) -> JSONObject:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidField("metadata", "must be a JSON object")
    try:
        _utf8(json.dumps(value, ensure_ascii=False, allow_nan=False), "metadata")
    except (TypeError, ValueError, RecursionError):
        raise InvalidField("metadata", "must be plain JSON (no NaN or Infinity)") from None
    return value


def bounded_int(value: Any, field: str, default: int, maximum: int) -> int:
    if value is None:
        return default
    # bool is an int subclass; true/false are not counts.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidField(field, "must be an integer")
    return _in_range(value, field, maximum)


def query_int(value: str | None, field: str, default: int, maximum: int | None) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise InvalidField(field, "must be an integer") from None
    return _in_range(number, field, maximum)


def _utf8(value: str, field: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidField(field, "contains an unpaired surrogate") from None


def _in_range(value: int, field: str, maximum: int | None) -> int:
    if value < 1:
        raise InvalidField(field, "must be at least 1")
    if maximum is not None and value > maximum:
        raise InvalidField(field, f"must be at most {maximum}")
    return value
