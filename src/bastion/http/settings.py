"""What a new client connection copies from its worker, in one compiled object.

An HTTP/1.1 connection copies the plan's limits and timeouts when it opens. Read from the
plan, that is twelve lookups by name (the plan and its config sections are Python objects)
at some 300 instructions each: 3.6k of a new connection's ~105k. The worker makes one
`ConnectionSettings` per plan (`ServerContext.use_plan`) and a compiled connection reads
its fields as struct fields.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bastion.http.wheel import TimerWheel

if TYPE_CHECKING:
    from bastion.http.router import Router

__all__ = ["ConnectionSettings"]


class ConnectionSettings:
    """The loop, the timer wheel, and the limits and timeouts of one plan."""

    def __init__(self, loop: asyncio.AbstractEventLoop, wheel: TimerWheel, plan: Router) -> None:
        self.loop = loop
        self.wheel = wheel
        limits = plan.limits
        self.max_header_bytes: int = limits.max_header_bytes
        self.max_uri_bytes: int = limits.max_uri_bytes
        self.max_body_bytes: int = limits.max_body_bytes
        self.max_connections: int = limits.max_connections
        timeouts = plan.timeouts
        self.header_timeout: float = timeouts.header
        self.body_timeout: float = timeouts.body
        self.idle_timeout: float = timeouts.keepalive
        self.send_timeout: float = timeouts.send
