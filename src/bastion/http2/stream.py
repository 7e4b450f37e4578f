"""One HTTP/2 stream: the `Downstream` a handler answers one request through.

The proxy, static files, redirects and problem answers call the same methods they
call on the HTTP/1.1 connection (respond, problem, write_head, write_body,
end_response, take_body, pause_reading, cork, …); the stream turns them into
HEADERS and DATA frames within the HTTP/2 flow-control windows.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final

from bastion.http.dispatch import cancel_handler
from bastion.http.problem import ProblemAnswers
from bastion.http.request import BODY_FIXED, BODY_LENGTH, BODY_NONE, BodySink, Request
from bastion.http.status import fixed_head
from bastion.http2.headers import StreamReject, response_headers

if TYPE_CHECKING:
    import asyncio

    from bastion.http.context import ServerContext
    from bastion.http.downstream import Pause, Producer, Tunnel
    from bastion.http2.connection import HTTP2Connection

# Response bytes a stream may hold while its windows are closed; past it the
# producer (the upstream socket, a file) is paused until the client opens them.
HIGH_WATER: Final = 64 * 1024
LOW_WATER: Final = 16 * 1024


class Stream(ProblemAnswers):
    # class-level defaults: a new stream assigns only what differs (but `producer`, which
    # __init__ sets too: mypyc drops a class-level default typed with a compiled module's
    # protocol, docs/compiled.md)
    producer: Producer | None = None
    producer_paused = False
    resp_started = False
    answered = False  # end_response/abort done and logged
    ended = False  # the response body is complete (END_STREAM once flushed)
    closed = False  # END_STREAM sent or the stream reset: no more frames
    read_paused = 0  # the Pause reasons that hold, as an int
    unacked = 0  # request body bytes received but not yet passed on
    pending_bytes = 0
    queued = False  # waiting in the connection's list for the next flush
    reject: StreamReject | None = None
    # the request body's timer: when it last made progress (0 while not watched)
    body_at = 0.0
    uploading = False  # counted in the connection's forwarded uploads (http2.max_uploads)
    waiting = False  # held back by that cap: not dispatched yet
    held = 0  # body bytes held while waiting and credited to the connection window
    scheme = b"https"
    secure = True

    def __init__(self, conn: HTTP2Connection, sid: int, req: Request) -> None:
        self.conn = conn
        self.sid = sid
        self.req = req
        self.ctx: ServerContext = conn.ctx
        self.pending: deque[bytes] = deque()
        self.producer = None

    # ---------------------------------------------- what handlers look at
    @property
    def closing(self) -> bool:
        return self.closed or self.conn.closing

    @property
    def write_paused(self) -> bool:
        return self.producer_paused

    @property
    def send_timeout(self) -> float:
        return self.conn.send_timeout

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.ctx.loop

    @property
    def date_header(self) -> bytes:
        return self.ctx.date_header

    @property
    def client_ip(self) -> str:
        return self.conn.client_ip

    @property
    def open(self) -> bool:
        return not self.closed and not self.conn.closing and self.conn.transport is not None

    def set_producer(self, producer: Producer | None) -> None:
        self.producer = producer

    def close_after_response(self) -> None:
        pass  # one stream: the connection carries on

    def start_tunnel(self, tunnel: Tunnel, head: bytes = b"", rest: bytes = b"") -> None:
        raise RuntimeError("HTTP/2 streams are never upgraded")

    def tunnel_write(self, data: bytes) -> None:
        raise RuntimeError("HTTP/2 streams are never upgraded")

    def unsent_bytes(self) -> int:
        """Response bytes the client's flow-control windows have not let out yet."""
        return self.pending_bytes

    # ------------------------------------------------------ request body
    def on_data(self, data: bytes, flow_length: int) -> None:
        req = self.req
        req.body_bytes += len(data)
        max_body = self.conn.max_body_bytes
        if max_body and req.body_bytes > max_body:
            self.conn.ack(self.sid, flow_length)
            self._cancel_handler()
            if self.resp_started:
                self.abort()
            elif not self.answered:
                self.problem(req, 413)
            return
        sink = req.sink
        if sink is not None:
            sink.on_body(data)
            self._ack(flow_length)
        elif req.dispatched and req.body_buffer is None:
            self.conn.ack(self.sid, flow_length)  # nobody wants it: dropped
        else:
            if req.body_buffer is None:
                req.body_buffer = []
            req.body_buffer.append(data)
            # held, not acknowledged: the stream window bounds what waits here
            self.unacked += flow_length
            if self.waiting:
                # held back for a while: only this stream's window stays closed, so
                # the uploads under way keep the connection window (within a budget)
                self.conn.hold_waiting(self, flow_length)

    def on_end(self) -> None:
        req = self.req
        req.body_done = True
        if self.uploading:
            self.conn.uploads.done(self)
        if req.sink is not None:
            req.sink.on_body_end()

    def _ack(self, flow_length: int) -> None:
        if self.read_paused:
            self.unacked += flow_length
        else:
            self.conn.ack(self.sid, flow_length)

    def take_body(self, req: Request, sink: BodySink) -> list[bytes]:
        buffered = req.body_buffer or []
        req.body_buffer = None
        req.sink = sink
        if not self.read_paused and self.unacked:
            self.conn.ack(self.sid, self.unacked)
            self.unacked = 0
        if self.body_at:
            self.body_at = self.ctx.loop.time()  # the window may have been closed until now
        return buffered

    def pause_reading(self, reason: Pause) -> None:
        # the upstream cannot take more: stop acknowledging, the client's window closes
        # (the reasons are kept as an int: the enum's own operators are slow)
        self.read_paused |= int(reason)

    def resume_reading(self, reason: Pause) -> None:
        bits = int(reason)
        if self.read_paused & bits:
            self.read_paused &= ~bits
            if not self.read_paused and self.unacked and self.req.sink is not None:
                self.conn.ack(self.sid, self.unacked)
                self.unacked = 0
            if self.body_at:
                self.body_at = self.ctx.loop.time()  # paused by us: not the client's time

    def send_continue(self, req: Request) -> None:
        if req.expect_continue and not req.body_done and not self.closing:
            req.expect_continue = False
            self.conn.send_headers(self, [(b":status", b"100")], False)

    # ------------------------------------------------------------ output
    def respond(
        self,
        req: Request,
        status: int,
        body: bytes = b"",
        content_type: bytes = b"text/plain; charset=utf-8",
        headers: bytes = b"",
    ) -> None:
        if self.closing or self.answered:
            return
        req.status = status
        no_body = req.method == "HEAD" or status in (204, 304)
        head = fixed_head(status, self.ctx.date_header, body, content_type, headers)
        if no_body:
            body = b""
        self.write_head(req, head, BODY_NONE if not body else BODY_FIXED)
        self.write_body(body)
        self.end_response()

    def write_head(self, req: Request, head: bytes, framing: int) -> None:
        if self.closing or self.resp_started:
            return
        self.resp_started = True
        if req.on_head is not None:
            head, framing = req.on_head(req, head, framing)
        if framing == BODY_FIXED:
            framing = BODY_LENGTH
        try:
            fields = response_headers(head + req.extra_head)
        except ValueError as exc:
            self.conn.unsendable(self, exc)
            return
        fields.append((b"x-request-id", req.request_id.encode("latin-1")))
        req.bytes_out += len(head)
        end = framing == BODY_NONE
        if end:
            self.ended = True
        self.conn.send_headers(self, fields, end)

    def write_body(self, data: bytes) -> None:
        body_filter = self.req.body_filter
        if body_filter is not None:
            data = body_filter.feed(data)
        self._write_body(data)

    def _write_body(self, data: bytes) -> None:
        if not data or self.closing or self.ended:
            return
        self.pending.append(data)
        self.pending_bytes += len(data)
        self.req.bytes_out += len(data)
        self.conn.send_pending(self)
        if self.pending_bytes > HIGH_WATER and not self.producer_paused:
            self.producer_paused = True
            if self.producer is not None:
                self.producer.pause_producing()

    def drained(self) -> None:
        """Called by the connection after it moved pending bytes into frames."""
        if self.producer_paused and self.pending_bytes <= LOW_WATER:
            self.producer_paused = False
            if self.producer is not None:
                self.producer.resume_producing()

    def end_response(self) -> None:
        if self.answered:
            return
        req = self.req
        if req.body_filter is not None:
            body_filter = req.body_filter
            req.body_filter = None
            self._write_body(body_filter.finish())
        self.answered = True
        self.ended = True
        self.producer = None
        if not req.body_done:
            req.sink = None  # answered early: the rest of the body is not wanted
        self.ctx.finish(req)
        if not self.closed:
            self.conn.send_pending(self)

    def abort(self) -> None:
        """The response was cut short: reset this stream only, its neighbours go on."""
        self._cancel_handler()
        if not self.answered:
            self.answered = True
            self.ctx.finish(self.req)
        self.conn.reset(self, cancelled=False)

    # The connection already holds every frame until the end of the loop iteration
    # (see HTTP2Connection.flush_soon): corking a stream has nothing left to do.
    def cork(self) -> None:
        pass

    def uncork(self) -> None:
        pass

    # --------------------------------------------------------- the end
    def body_timed_out(self) -> None:
        """No request body byte for timeouts.body: 408 if nothing was answered yet, else
        the stream is reset; the upstream request is abandoned either way."""
        self.body_at = 0.0
        self._cancel_handler()
        if self.resp_started or self.answered:
            self.abort()
        else:
            self.problem(self.req, 408)

    def on_reset(self) -> None:
        """The client reset the stream or the connection went away."""
        self.closed = True
        if self.uploading:
            self.conn.uploads.done(self)
        if self.held:
            self.conn.uploads.release(self)
        self.pending.clear()
        self.pending_bytes = 0
        self._cancel_handler()
        if not self.answered:
            self.answered = True
            if self.req.status == 0:
                self.req.status = 499
            if self.req.dispatched:
                self.ctx.finish(self.req)

    def _cancel_handler(self) -> None:
        producer = self.producer
        self.producer = None
        cancel_handler(self.req, producer)
