"""P3: a streamed body is forwarded whole, even when its end arrives while a chunk is
still being sent to a slow client (it used to lose the tail: a flaky 100 MB download)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.proxy.forward import Forwarder
from gateway.proxy.upstream import UpstreamPool


class Upstream:
    """Parsed chunks; what arrives while a send waits is queued, as the parser does."""

    def __init__(self, first: list[bytes], during_send: list[bytes]) -> None:
        self.chunks = first
        self.during_send = during_send
        self.done = False

    async def body(self, idle_timeout: float) -> list[bytes]:
        chunks, self.chunks = self.chunks, []
        return chunks

    def arrive(self) -> None:
        if self.during_send:
            self.chunks, self.during_send = self.during_send, []
            self.done = True  # the end arrived together with the last bytes


@pytest.mark.anyio
async def test_p3_tail_that_arrives_during_a_slow_send_is_still_forwarded() -> None:
    upstream = Upstream([b"a" * 10, b"b" * 10], during_send=[b"c" * 10, b"d" * 5])
    sent: list[dict[str, Any]] = []

    async def slow_send(message: dict[str, Any]) -> None:
        sent.append(message)
        upstream.arrive()
        await asyncio.sleep(0)

    forwarder = Forwarder(
        UpstreamPool("127.0.0.1", 9, connect_timeout=1), host=b"x", header_timeout=1, idle_timeout=1
    )
    await forwarder._stream(upstream, slow_send, asyncio.Event())  # type: ignore[arg-type]
    assert b"".join(m["body"] for m in sent) == b"a" * 10 + b"b" * 10 + b"c" * 10 + b"d" * 5
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert all(m["more_body"] for m in sent[:-1])
