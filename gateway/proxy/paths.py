"""PROTOCOL P2: one canonical form of the request path, computed once.

The policy matches this canonical path and the upstream receives exactly the same one,
so no spelling of a path (`%2e%2e`, `//`, `;params`, `.`) can be authorised as one
route and served as another. What cannot be canonicalised unambiguously is rejected:
encoded slashes and backslashes, raw backslashes, NUL and other control bytes,
malformed or non-UTF-8 percent-escapes, and `..` above the root.
"""

from __future__ import annotations

from gateway.errors import InvalidRequest

_HEX = frozenset(b"0123456789abcdefABCDEF")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Printable ASCII other than space; '%' is handled separately, '\\' is rejected below.
_ALLOWED_RAW = frozenset(range(0x21, 0x7F))
_FORBIDDEN_DECODED = frozenset(b"/\\\x00")
# Bytes a path may hold and still need no decoding: printable ASCII minus '%', ';' and
# '\\'. `raw.translate(None, _PLAIN)` deletes them all in one C call.
_PLAIN = bytes(sorted(_ALLOWED_RAW - frozenset(b"%;\\")))


class InvalidPath(InvalidRequest):
    """The request path cannot be canonicalised; answered with 400."""


def canonical_path(raw: bytes) -> str:
    """The canonical form of a raw request path (no query string), or InvalidPath."""
    if not raw.startswith(b"/"):
        raise InvalidPath("the request path must start with '/'")
    if _is_plain(raw):
        return raw.decode("ascii")
    decoded = _decode(raw)
    segments: list[str] = []
    parts = [part.split(";", 1)[0] for part in decoded.split("/")[1:]]
    for segment in parts:
        _push(segments, segment)
    path = "/" + "/".join(segments)
    if parts[-1] in _DIRECTORY_ENDINGS and path != "/":
        path += "/"
    return path


_DIRECTORY_ENDINGS = frozenset({"", ".", ".."})


def _is_plain(raw: bytes) -> bool:
    """Fast path: nothing to decode, resolve or reject (the common case)."""
    return not raw.translate(None, _PLAIN) and b"//" not in raw and b"/." not in raw


def _decode(raw: bytes) -> str:
    """Decode unreserved escapes, keep the others (upper-case hex), check UTF-8."""
    out = bytearray()
    escaped = bytearray()  # every byte the path means, to validate UTF-8
    i, n = 0, len(raw)
    while i < n:
        byte = raw[i]
        if byte == 0x25:  # '%'
            if i + 2 >= n:
                raise InvalidPath("truncated percent-escape in the path")
            hi, lo = raw[i + 1], raw[i + 2]
            if hi not in _HEX or lo not in _HEX:
                raise InvalidPath("malformed percent-escape in the path")
            value = int(raw[i + 1 : i + 3], 16)
            if value in _FORBIDDEN_DECODED or value < 0x20 or value == 0x7F:
                raise InvalidPath("encoded slash, backslash or control byte in the path")
            if value in _UNRESERVED:
                out.append(value)
            else:
                out += b"%" + raw[i + 1 : i + 3].upper()
            escaped.append(value)
            i += 3
            continue
        if byte not in _ALLOWED_RAW or byte == 0x5C:
            raise InvalidPath("backslash, space, control or non-ASCII byte in the path")
        out.append(byte)
        escaped.append(byte)
        i += 1
    try:
        escaped.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPath("the path is not valid UTF-8") from None
    return out.decode("ascii")


def _push(segments: list[str], segment: str) -> None:
    if segment == "..":
        if not segments:
            raise InvalidPath("the path climbs above the root")
        segments.pop()
    elif segment not in (".", ""):
        segments.append(segment)
