"""gateway.proxy.turns: the sockets written in a loop turn are written at its end, together."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from gateway.proxy.turns import TurnWrites
from gateway.proxy.upstream import UpstreamConnection


class Item:
    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail

    def flush_turn(self) -> None:
        self.log.append(self.name)
        if self.fail:
            raise OSError("broken")


class CountingLoop:
    """Records call_soon (what TurnWrites schedules) and runs the callbacks on demand."""

    def __init__(self) -> None:
        self.soon: list[Any] = []

    def call_soon(self, callback: Any, *args: Any) -> None:
        self.soon.append((callback, args))

    def run(self) -> None:
        soon, self.soon = self.soon, []
        for callback, args in soon:
            callback(*args)


def test_one_callback_per_turn_flushing_every_item_in_order() -> None:
    loop, turn = CountingLoop(), TurnWrites()
    log: list[str] = []
    for name in "abc":
        turn.add(loop, Item(name, log))  # type: ignore[arg-type]
    assert log == []
    assert len(turn) == 3
    assert len(loop.soon) == 1  # not one per write
    loop.run()
    assert log == ["a", "b", "c"]
    assert len(turn) == 0
    loop.run()
    assert log == ["a", "b", "c"]  # flushed once


def test_an_item_added_while_flushing_waits_for_the_next_turn() -> None:
    loop, turn = CountingLoop(), TurnWrites()
    log: list[str] = []

    class Again(Item):
        def flush_turn(self) -> None:
            super().flush_turn()
            turn.add(loop, Item("later", log))  # type: ignore[arg-type]

    turn.add(loop, Again("first", log))  # type: ignore[arg-type]
    loop.run()
    assert log == ["first"]
    assert len(loop.soon) == 1
    loop.run()
    assert log == ["first", "later"]


def test_a_failing_item_does_not_keep_the_others_bytes(caplog: pytest.LogCaptureFixture) -> None:
    loop, turn = CountingLoop(), TurnWrites()
    log: list[str] = []
    turn.add(loop, Item("a", log, fail=True))  # type: ignore[arg-type]
    turn.add(loop, Item("b", log))  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, "gateway.proxy.turns"):
        loop.run()
    assert log == ["a", "b"]
    assert "buffered bytes failed" in caplog.text


class Socket(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def abort(self) -> None:
        self.closed = True


async def connection() -> tuple[UpstreamConnection, Socket]:
    conn, socket = UpstreamConnection(), Socket()
    conn.connection_made(socket)
    return conn, socket


@pytest.mark.anyio
async def test_a_forwarded_request_leaves_when_the_turn_ends() -> None:
    turn = TurnWrites()
    (first, one), (second, two) = await connection(), await connection()
    first.send_in_turn(b"GET /a HTTP/1.1\r\n\r\n", turn)
    second.send_in_turn(b"GET /b HTTP/1.1\r\n\r\n", turn)
    assert one.writes == two.writes == []
    await asyncio.sleep(0)
    assert one.writes == [b"GET /a HTTP/1.1\r\n\r\n"]
    assert two.writes == [b"GET /b HTTP/1.1\r\n\r\n"]


@pytest.mark.anyio
async def test_two_requests_on_one_connection_in_one_turn_keep_their_order() -> None:
    turn = TurnWrites()
    conn, socket = await connection()
    conn.send_in_turn(b"first", turn)
    conn.send_in_turn(b"second", turn)
    await asyncio.sleep(0)
    assert socket.writes == [b"first", b"second"]


@pytest.mark.anyio
async def test_a_connection_closed_before_the_turn_ends_writes_nothing() -> None:
    turn = TurnWrites()
    conn, socket = await connection()
    conn.send_in_turn(b"request", turn)
    conn.close()
    await asyncio.sleep(0)
    assert socket.writes == []
