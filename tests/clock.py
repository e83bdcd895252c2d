"""The one test clock: a callable the code under test reads, that the test moves."""

from __future__ import annotations

START = 1_800_000_000.0


class Clock:
    """`clock()` returns `clock.now`; set it or `advance` it to move time."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
