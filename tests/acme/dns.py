"""A tiny DNS responder on loopback for Pebble's `-dnsserver`: names map to 127.0.0.1.

Pebble resolves the names it validates; pointed here, it never asks any other server.
A queries for a known name get 127.0.0.1, AAAA and other types get an empty answer, and
unknown names get NXDOMAIN. UDP only; a question that does not parse is dropped.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterable

A, AAAA = 1, 28


def _question(packet: bytes) -> tuple[str, int, int] | None:
    """(name, qtype, end offset) of the first question, or None."""
    labels: list[str] = []
    offset = 12
    while offset < len(packet):
        length = packet[offset]
        if length == 0:
            offset += 1
            if offset + 4 > len(packet):
                return None
            qtype = struct.unpack("!H", packet[offset : offset + 2])[0]
            return ".".join(labels).lower(), qtype, offset + 4
        if length > 63:
            return None
        labels.append(packet[offset + 1 : offset + 1 + length].decode("ascii", "replace"))
        offset += 1 + length
    return None


def answer(packet: bytes, names: frozenset[str]) -> bytes | None:
    if len(packet) < 12:
        return None
    (ident, flags, qdcount) = struct.unpack("!HHH", packet[:6])
    parsed = _question(packet) if qdcount == 1 and not flags & 0x8000 else None
    if parsed is None:
        return None
    name, qtype, end = parsed
    known = name in names
    rcode = 0 if known else 3  # NXDOMAIN
    records = b""
    if known and qtype == A:
        # pointer to the question's name, type A, class IN, TTL 0, 4 bytes: 127.0.0.1
        records = struct.pack("!HHHIH", 0xC00C, A, 1, 0, 4) + socket.inet_aton("127.0.0.1")
    header = struct.pack(
        "!HHHHHH", ident, 0x8000 | 0x0400 | (flags & 0x0100) | rcode, 1, 1 if records else 0, 0, 0
    )
    return header + packet[12:end] + records


class LoopbackDNS:
    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(n.lower() for n in names)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.queries: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> LoopbackDNS:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                packet, peer = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            parsed = _question(packet) if len(packet) >= 12 else None
            if parsed is not None:
                self.queries.append(parsed[0])
            reply = answer(packet, self.names)
            if reply is not None:
                self.sock.sendto(reply, peer)
