"""The writes of one event-loop turn, handed to the kernel together at its end.

A write to a socket whose reader is asleep wakes that reader, and waking a process on
another CPU costs an inter-processor interrupt (on a virtual machine, an exit to the
hypervisor). In the proxy-bound GET profile (`perf record -g`, bench/README.md) ~15 %
of the gateway's CPU sat under `sock_def_readable` → `try_to_wake_up`: every answer
and every forwarded request woke its peer (the load generator, the upstream) on its
own. Here the sockets written during a turn (the answers to what the turn's reads
brought, the requests they forward) are written back to back when the turn ends,
before the loop waits for I/O again, so a sleeping peer that reads many of them is
woken once for all, not once per write. It costs one `call_soon` per turn (not per
write) and adds no wait: the writes leave in the turn that made them, as a
CorkedTransport's always did.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

logger = logging.getLogger("gateway.proxy.turns")


class Flushable(Protocol):
    def flush_turn(self) -> None:
        """Write what this turn left buffered (called once per `TurnWrites.add`)."""


class TurnWrites:
    """What to flush at the end of the current turn; one per server or forwarder (its
    callbacks run on the loop that first adds to it)."""

    __slots__ = ("_due",)

    def __init__(self) -> None:
        self._due: list[Flushable] = []

    def add(self, loop: asyncio.AbstractEventLoop, item: Flushable) -> None:
        """`item.flush_turn()` at the end of this turn (callers add an item once per
        turn: they remember that they are due)."""
        if not self._due:
            loop.call_soon(self._flush)
        self._due.append(item)

    def __len__(self) -> int:
        return len(self._due)

    def _flush(self) -> None:
        due, self._due = self._due, []  # added while flushing: the next turn
        for item in due:
            try:
                item.flush_turn()
            except Exception:  # one broken transport must not keep the others' bytes
                logger.exception("writing a connection's buffered bytes failed")
