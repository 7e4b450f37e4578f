"""HTTP/2 frames in: the frame engine's events applied to the connection's streams.

Requests of one received chunk are dispatched only after the whole chunk is
processed, so a stream reset in the same read never reaches a backend (rapid reset);
past `http2.max_resets` early cancellations in 10 seconds the connection is closed
with GOAWAY(ENHANCE_YOUR_CALM). Floods of header blocks and control frames close it
too (guard.py).
"""

from __future__ import annotations

import logging
from typing import Any, Final

from bastion.http2.engine import (
    BODY,
    ENDED,
    REFUSED,
    REQUEST,
    RESET,
    SETTINGS_CHANGED,
    TERMINATED,
    TRAILERS,
    WINDOW,
    Event,
)
from bastion.http2.errors import (
    ENHANCE_YOUR_CALM,
    INTERNAL_ERROR,
    NO_ERROR,
    PROTOCOL_ERROR,
    ConnectionFailure,
)
from bastion.http2.headers import Malformed, check_trailers
from bastion.http2.output import Output
from bastion.http2.stream import Stream

log = logging.getLogger("bastion.http2")

RESET_WINDOW: Final = 10.0  # seconds over which early cancellations are counted
# PING, SETTINGS, PRIORITY and empty DATA frames allowed per RESET_WINDOW (and, apart,
# header blocks for streams already reset): browsers send a handful per connection, a
# flood sends them by the thousand
_MAX_CONTROL: Final = 1000


class FrameEvents(Output):
    """The input side of `HTTP2Connection`."""

    # --------------------------------------------------------------- input
    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        guard = self.guard
        if not guard.feed(data):
            log.warning("http2: header block flood from %s: closing", self.client_ip)
            self.fail(ENHANCE_YOUR_CALM)
            return
        if guard.control > _MAX_CONTROL:
            log.warning("http2: control frame flood from %s: closing", self.client_ip)
            self.fail(ENHANCE_YOUR_CALM)
            return
        try:
            events = self.engine.receive(data)
        except ConnectionFailure as exc:
            log.info("http2: protocol error from %s: %s", self.client_ip, exc.reason)
            self.fail(exc.code)
            return
        if self.engine.ignored_blocks > _MAX_CONTROL:
            # header blocks for streams already reset: decoded, dropped, and no request
            # counted against http2.max_requests for them
            log.warning("http2: header blocks for reset streams from %s: closing", self.client_ip)
            self.fail(ENHANCE_YOUR_CALM)
            return
        now = self.ctx.loop.time()
        if guard.in_block:
            if not self.block_since:
                self.block_since = now
        elif self.preface_seen:
            self.block_since = 0.0
        try:
            self._handle_events(events, now)
        except Exception:
            # a bug must cost this connection at most, never the worker
            log.exception("http2: failed handling frames from %s", self.client_ip)
            self.fail(INTERNAL_ERROR)

    def _handle_events(self, events: list[Event], now: float) -> None:
        guard = self.guard
        streams = self.streams
        new: list[Stream] = []
        for event in events:
            kind = event.kind
            if kind == BODY:
                stream = streams.get(event.sid)
                if stream is None:
                    self.ack(event.sid, event.size)
                    continue
                length = stream.req.content_length
                if length is not None and stream.req.body_bytes + len(event.data) > length:
                    # RFC 9113 §8.1.1: DATA past the Content-Length is malformed
                    self.ack(event.sid, event.size)
                    self._malformed(stream, now, "a body longer than its Content-Length")
                    continue
                if stream.body_at:
                    stream.body_at = now
                stream.on_data(event.data, event.size)
            elif kind == REQUEST:
                stream = self._open(event, now)
                if stream is not None:
                    new.append(stream)
            elif kind == ENDED:
                stream = streams.get(event.sid)
                if stream is not None:
                    length = stream.req.content_length
                    if (
                        length is not None
                        and stream.req.body_bytes != length
                        and stream.reject is None  # (already answered 400 for it)
                    ):
                        self._malformed(stream, now, "a body shorter than its Content-Length")
                    else:
                        stream.on_end()
            elif kind == TRAILERS:
                stream = streams.get(event.sid)
                if stream is not None:
                    self._on_trailers(stream, event.headers, now)
            elif kind == WINDOW:
                if event.sid == 0:
                    for stream in list(streams.values()):
                        if stream.pending:
                            self._move(stream)
                else:
                    stream = streams.get(event.sid)
                    if stream is not None and stream.pending:
                        self._move(stream)
            elif kind == RESET:
                self._on_client_reset(event.sid, now)
            elif kind == REFUSED:
                self._count_early_reset(now)  # a stream past the concurrent stream limit
            elif kind == SETTINGS_CHANGED:
                if not self.preface_seen:
                    self.preface_seen = True
                    self.block_since = now if guard.in_block else 0.0
                for stream in list(streams.values()):
                    if stream.pending:
                        self._move(stream)
            elif kind == TERMINATED:
                if event.code == NO_ERROR and self.streams:
                    # the client opens no more streams but still reads (RFC 9113 §6.8):
                    # its open streams are answered, then the connection closes
                    self.goaway()
                else:
                    # the client is failing the connection: nothing more can be sent
                    self.close()
                    return
            if self.closing:
                return
        for stream in new:
            if not stream.closed and not stream.answered:
                self.uploads.start(stream, now)
                if stream.waiting and stream.unacked:
                    # body bytes that came with its HEADERS, before it had to wait
                    self.hold_waiting(stream, stream.unacked)
        if self.uploads.waiting:
            self.uploads.admit()
        self.flush_soon()

    def _on_trailers(self, stream: Stream, fields: list[Any], now: float) -> None:
        """Request trailers are checked like the head (and then dropped): malformed
        ones reset the stream before its body ends, so the upstream never sees the
        request complete."""
        try:
            check_trailers(fields)
        except Malformed as exc:
            self._malformed(stream, now, f"trailers: {exc}")

    def _malformed(self, stream: Stream, now: float, what: str) -> None:
        """A stream error (RFC 9113 §8.1.1): this stream is reset, its neighbours go on."""
        log.info("http2: malformed request from %s: %s", self.client_ip, what)
        if stream.req.status == 0:
            stream.req.status = 400  # for the access log of a dispatched request
        stream.on_reset()
        stream.closed = True
        self._reset(stream.sid, PROTOCOL_ERROR)
        self._forget(stream)
        self._count_early_reset(now)

    def _on_client_reset(self, sid: int, now: float) -> None:
        stream = self.streams.pop(sid, None)
        if stream is None:
            return
        early = not stream.answered
        stream.on_reset()
        self._give_back(stream)
        self._stream_gone()
        if early:
            # a stream cancelled before its answer: the rapid reset pattern when
            # it repeats (CVE-2023-44487); the backend work was cancelled above
            self._count_early_reset(now)

    def _count_early_reset(self, now: float) -> None:
        if now - self.reset_window_start > RESET_WINDOW:
            self.reset_window_start = now
            self.resets = 0
        self.resets += 1
        if self.resets > self.max_resets:
            log.warning("http2: rapid reset from %s: closing", self.client_ip)
            self.fail(ENHANCE_YOUR_CALM)
