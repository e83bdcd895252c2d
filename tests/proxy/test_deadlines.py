"""gateway.proxy.deadlines: many waits of one length on one timer."""

from __future__ import annotations

import asyncio

import pytest

from gateway.proxy.deadlines import Deadlines


class _Recorder:
    def __init__(
        self, log: list[tuple[str, float]], name: str, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.log, self.name, self.loop, self.start = log, name, loop, loop.time()

    def expire(self) -> None:
        self.log.append((self.name, self.loop.time() - self.start))


def _recorder(
    log: list[tuple[str, float]], name: str, loop: asyncio.AbstractEventLoop
) -> _Recorder:
    return _Recorder(log, name, loop)


@pytest.mark.anyio
async def test_each_wait_expires_after_its_own_length_in_order() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(0.1)
    log: list[tuple[str, float]] = []
    deadlines.add(loop, _recorder(log, "a", loop))
    await asyncio.sleep(0.04)
    deadlines.add(loop, _recorder(log, "b", loop))
    await asyncio.sleep(0.2)
    assert [name for name, _ in log] == ["a", "b"]
    for _, waited in log:
        assert 0.095 <= waited < 0.16
    assert len(deadlines) == 0


@pytest.mark.anyio
async def test_a_discarded_wait_never_expires_and_the_next_still_does() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(0.08)
    log: list[tuple[str, float]] = []
    first = _recorder(log, "first", loop)
    deadlines.add(loop, first)
    await asyncio.sleep(0.03)
    deadlines.add(loop, _recorder(log, "second", loop))
    deadlines.discard(first)
    await asyncio.sleep(0.15)
    assert [name for name, _ in log] == ["second"]
    assert 0.075 <= log[0][1] < 0.14


@pytest.mark.anyio
async def test_a_wait_added_while_expiring_is_served_too() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(0.05)
    log: list[tuple[str, float]] = []
    again = _recorder(log, "again", loop)

    class First:
        def expire(self) -> None:
            log.append(("first", 0.0))
            deadlines.add(loop, again)

    deadlines.add(loop, First())
    await asyncio.sleep(0.2)
    assert [name for name, _ in log] == ["first", "again"]


@pytest.mark.anyio
async def test_close_cancels_everything() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(0.03)
    log: list[tuple[str, float]] = []
    deadlines.add(loop, _recorder(log, "a", loop))
    deadlines.close()
    await asyncio.sleep(0.08)
    assert log == []
    assert len(deadlines) == 0
