"""The request record of a small-body request on the protocol fast path (ObservedProxy
begin/finish): one record when it is answered, a 499 record when the client leaves
before its body is whole."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.observability.exchange import Exchange, ObservedProxy, Observer
from gateway.proxy.forward import Client
from tests.test_http_protocol import POST, FakeProxy, fast_connection, small_reply


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Recorded(Observer):
    def __init__(self) -> None:
        super().__init__(None, None)
        self.ended: list[Exchange] = []

    def end(self, exchange: Exchange) -> None:
        if not exchange.ended:
            super().end(exchange)
            self.ended.append(exchange)


def observed(answer: Any) -> tuple[FakeProxy, Recorded, ObservedProxy]:
    inner = FakeProxy(answer)
    observer = Recorded()
    return inner, observer, ObservedProxy(inner, observer)


@pytest.mark.anyio
async def test_small_body_request_is_recorded_once_with_its_status() -> None:
    inner, observer, proxy = observed(small_reply)
    _, transport = await fast_connection(proxy, POST)  # type: ignore[arg-type]
    assert inner.bodies == [b"{}"]
    assert [(e.method, e.path, e.status) for e in observer.ended] == [("POST", "/mcp", 200)]
    assert b"".join(transport.writes).startswith(b"HTTP/1.1 200 ")


@pytest.mark.anyio
async def test_client_leaving_mid_body_ends_the_record_as_499() -> None:
    inner, observer, proxy = observed(small_reply)
    protocol, _ = await fast_connection(proxy, POST[:-1])  # type: ignore[arg-type]
    assert observer.ended == []
    protocol.connection_lost(None)
    await asyncio.sleep(0)
    assert inner.bodies == []
    assert [e.status for e in observer.ended] == [499]


@pytest.mark.anyio
async def test_refused_at_the_head_is_recorded_with_the_refusal() -> None:
    def deny(client: Client) -> bool:
        client.respond(401, [(b"content-length", b"0")], b"")
        return False

    inner = FakeProxy(small_reply, admit=deny)
    observer = Recorded()
    await fast_connection(ObservedProxy(inner, observer), POST)  # type: ignore[arg-type]
    assert [e.status for e in observer.ended] == [401]
    assert inner.bodies == []
