"""The worker's side of the protocols' context: the current plan, the clock-driven
Date header, the heap trimmer and the access log as the first request observer."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bastion.http.context import Observer, ServerContext
from bastion.http.dates import imf_fixdate
from bastion.server.memory import HeapTrimmer

if TYPE_CHECKING:
    from bastion.observe.accesslog import AccessLog
    from bastion.plan import Plan


class WorkerContext(ServerContext):
    plan: Plan

    def __init__(self, loop: asyncio.AbstractEventLoop, plan: Plan) -> None:
        super().__init__(loop, plan)
        self.access_log: AccessLog | None = None
        # observers after the access log (metrics, stats)
        self.extra_observers: tuple[Observer, ...] = ()
        self._date_handle: asyncio.TimerHandle | None = None
        self.heap = HeapTrimmer()
        self._tick()

    def _tick(self) -> None:
        # Formatting the Date header costs microseconds; once a second is enough
        # (the same approach as uvicorn's server loop).
        self.date_header = b"Date: " + imf_fixdate().encode() + b"\r\n"
        self.heap.observe(len(self.connections))
        self._date_handle = self.loop.call_later(1.0, self._tick)

    def set_access_log(self, access_log: AccessLog | None) -> None:
        """The access log in force (None: off), the first of the request observers."""
        self.access_log = access_log
        self._set_observers()

    def add_observer(self, observer: Observer) -> None:
        """Another observer of finished requests, called after the access log."""
        self.extra_observers += (observer,)
        self._set_observers()

    def _set_observers(self) -> None:
        first = () if self.access_log is None else (self.access_log.write,)
        self.observers = first + self.extra_observers

    def close(self) -> None:
        if self._date_handle is not None:
            self._date_handle.cancel()
            self._date_handle = None
