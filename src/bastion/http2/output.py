"""HTTP/2 frames out, coalesced: frames (and the response bodies streams hand over)
wait until the end of the event-loop iteration, then leave in one transport write.
With many streams answered by many upstream reads in the same iteration, that is one
TLS record and one send() for all of them instead of a few per response, and a body's
last DATA frame carries END_STREAM instead of an empty frame after it.
"""

from __future__ import annotations

import logging

from bastion.http2.errors import INTERNAL_ERROR, NO_ERROR
from bastion.http2.state import ConnectionState
from bastion.http2.stream import Stream

log = logging.getLogger("bastion.http2")


class Output(ConnectionState):
    """The output side of `HTTP2Connection`: what its streams call to send."""

    def _reset(self, sid: int, code: int) -> None:
        """Reset a stream the client may already have reset (then nothing is sent): its
        RST_STREAM can arrive in the same read as the HEADERS."""
        self.engine.reset_stream(sid, code)

    def send_headers(self, stream: Stream, fields: list[tuple[bytes, bytes]], end: bool) -> None:
        if self.closing or stream.closed:
            return
        if not self.engine.send_headers(stream.sid, fields, end):
            stream.on_reset()  # the client reset it meanwhile
            self._forget(stream)
            return
        if end:
            self._sent_end(stream)
        self.flush_soon()

    def unsendable(self, stream: Stream, exc: Exception) -> None:
        """A response head HTTP/2 cannot carry (from an upstream): this stream fails alone."""
        log.warning("http2: response %s not sendable: %s", stream.req.request_id, exc)
        if stream.req.status < 500:
            stream.req.status = 502
        stream.abort()

    def send_pending(self, stream: Stream) -> None:
        """Queue a stream's pending bytes (or its end) for the next flush."""
        if stream.queued or self.closing or stream.closed:
            return
        stream.queued = True
        self.ready.append(stream)
        self.flush_soon()

    def _move(self, stream: Stream) -> None:
        """Move a stream's pending bytes into DATA frames as far as the windows allow;
        the last one carries END_STREAM when the response is complete."""
        if self.closing or stream.closed:
            return
        engine = self.engine
        sid = stream.sid
        pending = stream.pending
        while pending and not self.write_paused:
            window = engine.window(sid)
            if window <= 0:
                if window < 0:  # the client reset it meanwhile
                    stream.on_reset()
                    self._forget(stream)
                break
            chunk = pending[0]
            size = min(window, engine.max_frame, len(chunk))
            stream.pending_bytes -= size
            if size < len(chunk):
                engine.send_data(sid, chunk[:size], False)
                pending[0] = chunk[size:]
            else:
                pending.popleft()
                if not pending and stream.ended:
                    engine.send_data(sid, chunk, True)
                    self._sent_end(stream)
                    break
                engine.send_data(sid, chunk, False)
        else:
            if not pending and stream.ended:
                if engine.send_data(sid, b"", True):
                    self._sent_end(stream)
                else:
                    stream.on_reset()
                    self._forget(stream)
        stream.drained()

    def _sent_end(self, stream: Stream) -> None:
        stream.closed = True
        if not stream.req.body_done and not self.closing:
            # answered before the body was complete: ask the client to stop
            # sending it, without error (RFC 9113 §8.1)
            self._reset(stream.sid, NO_ERROR)
        self._forget(stream)

    def _forget(self, stream: Stream) -> None:
        self._give_back(stream)
        if stream.uploading:
            self.uploads.done(stream)
        if stream.held:
            self.uploads.release(stream)
        if self.streams.pop(stream.sid, None) is not None:
            self._stream_gone()

    def _give_back(self, stream: Stream) -> None:
        """The body bytes a stream still holds unacknowledged are dropped with it: their
        share of the connection window is given back (else each such stream would shrink
        the window for good)."""
        if stream.unacked:
            self.ack(stream.sid, stream.unacked)
            stream.unacked = 0

    def _stream_gone(self) -> None:
        if not self.streams:
            self.idle_since = self.ctx.loop.time()
            if self.goaway_sent and not self.closing:
                # the last answer is written: closed like an idle connection (what is
                # still leaving is not cut, see close_owing_nothing)
                self.close(owing_nothing=True)

    def reset(self, stream: Stream, cancelled: bool) -> None:
        stream.closed = True
        stream.pending.clear()
        if not self.closing:
            self._reset(stream.sid, INTERNAL_ERROR)
            self.flush_soon()
        self._forget(stream)

    def ack(self, sid: int, size: int) -> None:
        if self.closing or not size:
            return
        self.engine.acknowledge(size, sid)
        self.flush_soon()

    def flush_soon(self) -> None:
        """Write what is waiting once the current loop iteration's events are handled."""
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.ctx.loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self.flush_scheduled = False
        if self.closing:
            return
        self.flush()

    def flush(self) -> None:
        ready = self.ready
        if ready:
            self.ready = []
            for stream in ready:
                stream.queued = False
                self._move(stream)
        data = self.engine.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)
