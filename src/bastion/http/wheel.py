"""Many connections' deadlines on one loop timer: a coarse timer wheel.

Arming a loop timer (`loop.call_at`) costs uvloop some 7k instructions (a handle object,
a copy of the context, libuv's timer heap) and cancelling it 2k more: with a connection
per request, a client connection's timer was 8% of the request. The deadlines a
connection watches (its head, body, idle and lingering times, seconds each) need no such
precision. Here a deadline is an entry in the slot of `TICK` seconds it falls in (a dict
entry), and one loop timer is armed, for the earliest slot. A deadline is met at most
`TICK` late, never early: the owner is told when its slot is due, checks its own deadline
(which may have moved on since) and files itself again if it is not due.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from typing import Final, Protocol

__all__ = ["TICK", "Timed", "TimerWheel"]

log = logging.getLogger("bastion.server")

TICK: Final = 0.1  # seconds a slot spans


class Timed(Protocol):
    """What the wheel holds: told once its slot is due."""

    def on_deadline(self) -> None: ...


class TimerWheel:
    """The deadlines of one worker's connections, on one loop timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # slot number (its due time / TICK) -> the owners filed in it, in filing order
        self.slots: dict[int, dict[Timed, None]] = {}
        self.order: list[int] = []  # the numbers of `slots`, as a heap
        self.handle: asyncio.TimerHandle | None = None
        self.armed = 0  # the slot `handle` fires for

    def add(self, timed: Timed, deadline: float) -> int:
        """File `timed` for `deadline` (loop time); the slot it is in, for `discard`.
        The slot is due at its number times TICK, at or after the deadline."""
        slot = int(deadline / TICK) + 1
        bucket = self.slots.get(slot)
        if bucket is None:
            bucket = self.slots[slot] = {}
            heapq.heappush(self.order, slot)
            if self.handle is None or slot < self.armed:
                self._arm(slot)
        bucket[timed] = None
        return slot

    def discard(self, timed: Timed, slot: int) -> None:
        """Take `timed` out of `slot` (its owner closed, or its deadline came closer)."""
        bucket = self.slots.get(slot)
        if bucket is not None:
            bucket.pop(timed, None)

    def _arm(self, slot: int) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.armed = slot
        self.handle = self.loop.call_at(slot * TICK, self._fire)

    def _fire(self) -> None:
        self.handle = None
        # (the loop's clock is libuv's, in whole milliseconds: the armed slot is due
        # however the division rounds)
        due = max(int(self.loop.time() / TICK), self.armed)
        order = self.order
        buckets = []
        while order and order[0] <= due:
            bucket = self.slots.pop(heapq.heappop(order), None)
            if bucket:
                buckets.append(bucket)
        # only the slots due now: an owner filed again while these run waits for the
        # next turn of the loop, however close its deadline
        for bucket in buckets:
            for timed in bucket:
                try:
                    timed.on_deadline()
                except Exception:  # one owner's failure must not cost the others theirs
                    log.exception("a connection's timer failed")
        self._rearm()

    def _rearm(self) -> None:
        # A method of its own: within `_fire`, after `self.handle = None`, mypy takes the
        # handle for None still, and the compiled build would refuse the one an owner
        # filed while its slot ran (docs/compiled.md).
        order = self.order
        if order and (self.handle is None or order[0] < self.armed):
            self._arm(order[0])
