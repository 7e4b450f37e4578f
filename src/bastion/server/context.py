"""Per-worker state shared by every connection: the current plan, the clock-driven
Date header, request ids and the set of open connections (for draining)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from bastion.server.memory import HeapTrimmer

if TYPE_CHECKING:
    from bastion.http1.server import HTTP1Connection
    from bastion.http2.connection import HTTP2Connection
    from bastion.observe.accesslog import AccessLog
    from bastion.plan import Plan


class WorkerContext:
    def __init__(self, loop: asyncio.AbstractEventLoop, plan: Plan) -> None:
        self.loop = loop
        self.plan = plan
        self.connections: set[HTTP1Connection | HTTP2Connection] = set()
        self.http2_connections: set[HTTP2Connection] = set()
        # set when HTTPS listeners exist: takes over a TLS connection that chose h2
        self.start_http2: Callable[[Any], None] | None = None
        self.access_log: AccessLog | None = None
        self.draining = False
        self._id_prefix = os.urandom(6).hex()
        self._id_counter = 0
        self.date_header = b""
        self._date_handle: asyncio.TimerHandle | None = None
        self.heap = HeapTrimmer()
        self._tick()

    def _tick(self) -> None:
        # Formatting the Date header costs microseconds; once a second is enough
        # (the same approach as uvicorn's server loop).
        self.date_header = b"Date: " + formatdate(usegmt=True).encode() + b"\r\n"
        self.heap.observe(len(self.connections))
        self._date_handle = self.loop.call_later(1.0, self._tick)

    def next_request_id(self) -> str:
        self._id_counter += 1
        # a random per-process prefix and a counter: unique, and cheap to make
        return self._id_prefix + hex(self._id_counter)[2:]

    def close(self) -> None:
        if self._date_handle is not None:
            self._date_handle.cancel()
            self._date_handle = None
