"""The state of one HTTP/2 connection, shared by the parts of its protocol.

`HTTP2Connection` (connection.py: set-up, stream admission, closing, the tick) is
built as one chain of parts, as mypyc's native classes take a single compiled base:
`ConnectionState <- Output (output.py: frames coalesced and written once per loop
iteration) <- FrameEvents (events.py: frames in) <- HTTP2Connection`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bastion.http.context import ServerContext
    from bastion.http2.engine import Engine, Event
    from bastion.http2.guard import FrameGuard
    from bastion.http2.stream import Stream
    from bastion.http2.uploads import Uploads


class ConnectionState:
    # class-level defaults: a new connection assigns only what differs
    transport: Any = None
    closing = False
    write_paused = False
    goaway_sent = False
    last_sid = 0
    flush_scheduled = False
    requests = 0
    resets = 0
    reset_window_start = 0.0
    preface_seen = False
    block_since = 0.0
    control_since = 0.0
    timer: asyncio.TimerHandle | None = None

    # set once per connection (HTTP2Connection.__init__)
    ctx: ServerContext
    engine: Engine
    guard: FrameGuard
    uploads: Uploads
    client_ip: str
    streams: dict[int, Stream]
    # streams with response bytes to move into DATA frames at the next flush
    ready: list[Stream]
    max_header_bytes: int
    max_uri_bytes: int
    max_body_bytes: int
    header_timeout: float
    idle_timeout: float
    send_timeout: float
    connection_window: int
    max_requests: int
    max_resets: int
    idle_since: float

    # what each part calls in the others: every method is defined by the part that
    # owns it, which comes first in HTTP2Connection's MRO (a compiled class cannot
    # declare them under `if TYPE_CHECKING:`)
    def _open(self, event: Event, now: float) -> Stream | None:
        raise NotImplementedError

    def hold_waiting(self, stream: Stream, size: int) -> None:
        raise NotImplementedError

    def _count_early_reset(self, now: float) -> None:
        raise NotImplementedError

    def _reset(self, sid: int, code: int) -> None:
        raise NotImplementedError

    def _move(self, stream: Stream) -> None:
        raise NotImplementedError

    def _forget(self, stream: Stream) -> None:
        raise NotImplementedError

    def _stream_gone(self) -> None:
        raise NotImplementedError

    def _give_back(self, stream: Stream) -> None:
        raise NotImplementedError

    def ack(self, sid: int, size: int) -> None:
        raise NotImplementedError

    def flush_soon(self) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def goaway(self, last_sid: int | None = None) -> None:
        raise NotImplementedError

    def fail(self, code: int) -> None:
        raise NotImplementedError

    def close(self, owing_nothing: bool = False) -> None:
        raise NotImplementedError
