"""A client stand-in that collects a proxied response instead of sending it.

Revalidations and background refreshes go through the route's proxy handler like
any request (same upstream choice, retries and timeouts) with this object in place
of the client connection; `done` is called once with the outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from bastion.http.downstream import Downstream
from bastion.http.request import BodySink, Request

if TYPE_CHECKING:
    from bastion.http.downstream import Pause, Producer, Tunnel


class CaptureClient(Downstream):
    # class-level defaults, also for the attributes set later: an attribute named like a
    # property of Downstream must be declared here (see Downstream)
    producer: Producer | None = None
    resp_started = False
    scheme = b"http"

    def __init__(self, origin: Downstream, done: Callable[[CaptureClient], None]) -> None:
        # the client whose request this one stands in for: its loop and Date line
        self.origin = origin
        self.scheme = origin.scheme
        self.done = done
        self.finished = False
        self.status = 0  # 0 until a head arrived
        self.error = 0  # the status of a failure answered by the gateway itself (502, 504)
        self.head = b""
        self.framing = 0
        self.chunks: list[bytes] = []

    # what the exchange calls on a client
    def send_continue(self, req: Request) -> None:
        pass

    def take_body(self, req: Request, sink: BodySink) -> list[bytes]:
        return []

    def pause_reading(self, reason: Pause) -> None:
        pass

    def resume_reading(self, reason: Pause) -> None:
        pass

    def cork(self) -> None:
        pass

    def uncork(self) -> None:
        pass

    def write_head(self, req: Request, head: bytes, framing: int) -> None:
        self.resp_started = True
        self.head = head
        self.framing = framing
        self.status = int(head[9:12])

    def write_body(self, data: bytes) -> None:
        self.chunks.append(data)

    def end_response(self) -> None:
        self._finish()

    def problem(
        self, req: Request, status: int, detail: str | None = None, headers: bytes = b""
    ) -> None:
        self.error = status
        self._finish()

    def respond(
        self,
        req: Request,
        status: int,
        body: bytes = b"",
        content_type: bytes = b"",
        headers: bytes = b"",
    ) -> None:
        self.error = status
        self._finish()

    def abort(self) -> None:
        self.error = self.error or 502
        self._finish()

    def _finish(self) -> None:
        if not self.finished:
            self.finished = True
            self.done(self)

    # the rest of the Downstream contract
    secure = False
    client_ip = ""
    write_paused = False
    open = True
    send_timeout = 0.0

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.origin.loop

    @property
    def date_header(self) -> bytes:
        return self.origin.date_header

    def unsent_bytes(self) -> int:
        return 0

    def set_producer(self, producer: Producer | None) -> None:
        self.producer = producer

    def close_after_response(self) -> None:
        pass

    def start_tunnel(self, tunnel: Tunnel, head: bytes = b"", rest: bytes = b"") -> None:
        self.abort()  # an Upgrade answer is never cached

    def tunnel_write(self, data: bytes) -> None:
        pass

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)
