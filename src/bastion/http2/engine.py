"""The server side of HTTP/2 framing (RFC 9113): bytes in, events out; sends as frames.

Written for the gateway instead of driving the `h2` library: h2 builds a frame object,
runs two state machines and several generator chains per frame, which cost more than
half of a proxied HTTP/2 request. This engine keeps per stream only what the protocol
needs (its two halves, its two flow-control windows) and decodes frames straight from
the received bytes. HPACK decoding stays with the `hpack` library (decoder.py); header
blocks are encoded by encoder.py.

What it enforces itself: the preface; frame sizes; stream ids (client-initiated, odd,
increasing); the state of each stream (RFC 9113 §5.1); SETTINGS values; both directions
of flow control, with window overflows and frames beyond the advertised windows as
errors; header blocks interleaved with other frames; the concurrent stream limit it
advertises (streams past it are refused). A violation the RFC calls a connection error
raises `ConnectionFailure`; a stream error resets the stream and reports it as a
`RESET` event, so the gateway forgets it as if the client had reset it. The checks of
the request's fields (RFC 9113 §8) are in headers.py; floods are counted by guard.py.

Frames on a stream that is closed are ignored (their DATA still counts against the
connection window and is reported for acknowledgement): after a RST_STREAM crossed the
client's frames in flight, those frames are legitimate (RFC 9113 §5.4.2).
"""

from __future__ import annotations

from typing import Any, Final

from hpack.exceptions import HPACKError, OversizedHeaderListError

from bastion.http2.errors import (
    COMPRESSION_ERROR,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    STREAM_CLOSED,
    ConnectionFailure,
)
from bastion.http2.frames import (
    ACK,
    CONTINUATION,
    DATA,
    DEFAULT_FRAME,
    ENABLE_CONNECT_PROTOCOL,
    ENABLE_PUSH,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADER_TABLE_SIZE,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_FRAME_SIZE,
    MAX_WINDOW,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    frame_head,
    rst_frame,
)
from bastion.http2.sending import SendSide, StreamWindows

# a HEADERS frame's stream depends on itself (an engine-internal flag bit, beyond the
# frame's eight): a stream error once the block is decoded
_SELF_DEPENDENT: Final = 0x100

# event kinds
REQUEST: Final = 1  # a new stream's header block: headers, ended
BODY: Final = 2  # DATA: data, size (flow-controlled length, padding included)
ENDED: Final = 3  # the client's half of the stream is done
TRAILERS: Final = 4  # the header block that ends a stream: headers
WINDOW: Final = 5  # the client opened a window: sid 0 for the connection
RESET: Final = 6  # the stream is gone (the client reset it, or a stream error): code
SETTINGS_CHANGED: Final = 7  # the client's SETTINGS were applied
TERMINATED: Final = 8  # the client sent GOAWAY: code
REFUSED: Final = 9  # a new stream past the concurrent stream limit was refused


class Event:
    __slots__ = (
        "block",
        "checked",
        "code",
        "data",
        "ended",
        "generation",
        "headers",
        "kind",
        "sid",
        "size",
    )

    def __init__(self, kind: int, sid: int) -> None:
        self.kind = kind
        self.sid = sid
        self.data = b""
        self.size = 0
        self.headers: list[Any] = []
        self.ended = False
        self.code = 0
        # a request's header block, and whether its fields passed the scans before
        # (the decoder's memo knows it: see decoder.py)
        self.block = b""
        self.checked = False
        self.generation = 0  # the decoder memo's when the block was decoded


class Engine(SendSide):
    """One server connection's HTTP/2 state. `receive` turns bytes into events; the send
    side (sending.py) appends frames to an output buffer that `data_to_send` hands over."""

    # ------------------------------------------------------------------ input
    def receive(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        if self.parts:
            # the rest of a frame cut across reads: kept in pieces until it is whole, so
            # a frame dribbled a byte at a time is copied once, not once per read
            self.parts.append(data)
            self.parts_size += len(data)
            if self.parts_size < self.need:
                return events
            buf = b"".join(self.parts)
            self.parts = []
            self.parts_size = 0
        else:
            buf = data
        pos = 0
        end = len(buf)
        if not self.preface:
            if end < 24:
                if PREFACE[:end] != buf:
                    raise ConnectionFailure(PROTOCOL_ERROR, "invalid connection preface")
                self._keep(buf, 24)
                return events
            if buf[:24] != PREFACE:
                raise ConnectionFailure(PROTOCOL_ERROR, "invalid connection preface")
            self.preface = True
            pos = 24
        while end - pos >= 9:
            length = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2]
            if length > DEFAULT_FRAME:
                raise ConnectionFailure(FRAME_SIZE_ERROR, "a frame over the maximum size")
            stop = pos + 9 + length
            if stop > end:
                self._keep(buf[pos:], 9 + length)
                return events
            kind = buf[pos + 3]
            flags = buf[pos + 4]
            sid = int.from_bytes(buf[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
            payload = buf[pos + 9 : stop]
            pos = stop
            self._frame(kind, flags, sid, payload, events)
        if pos < end:
            self._keep(buf[pos:], 9)
        return events

    def _keep(self, rest: bytes, need: int) -> None:
        """Hold the start of a frame (or of the preface) until `need` bytes of it are in."""
        self.parts = [rest]
        self.parts_size = len(rest)
        self.need = need

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes, events: list[Event]) -> None:
        if self.block_sid and (kind != CONTINUATION or sid != self.block_sid):
            raise ConnectionFailure(PROTOCOL_ERROR, "a frame inside a header block")
        if not self.settings_seen and (kind != SETTINGS or flags & ACK):
            raise ConnectionFailure(PROTOCOL_ERROR, "the preface must start with SETTINGS")
        if kind == DATA:
            self._data(flags, sid, payload, events)
        elif kind == HEADERS:
            self._headers(flags, sid, payload, events)
        elif kind == CONTINUATION:
            if not self.block_sid:
                raise ConnectionFailure(PROTOCOL_ERROR, "CONTINUATION without a header block")
            self.block.append(payload)
            if flags & END_HEADERS:
                self._block_done(events)
        elif kind == WINDOW_UPDATE:
            self._window_update(sid, payload, events)
        elif kind == RST_STREAM:
            if len(payload) != 4:
                raise ConnectionFailure(FRAME_SIZE_ERROR, "RST_STREAM of a wrong size")
            self._check_known(sid, "RST_STREAM")
            if self.streams.pop(sid, None) is not None:
                event = Event(RESET, sid)
                event.code = int.from_bytes(payload, "big")
                events.append(event)
        elif kind == SETTINGS:
            self._settings(flags, sid, payload, events)
        elif kind == PING:
            if sid:
                raise ConnectionFailure(PROTOCOL_ERROR, "PING on a stream")
            if len(payload) != 8:
                raise ConnectionFailure(FRAME_SIZE_ERROR, "PING of a wrong size")
            if not flags & ACK:
                self.out.append(frame_head(8, PING, ACK, 0) + payload)
        elif kind == PRIORITY:
            if not sid:
                raise ConnectionFailure(PROTOCOL_ERROR, "PRIORITY on stream 0")
            if sid > self.highest_inbound:
                pass  # an idle stream: no RST_STREAM may name it (§5.1), and priority is advisory
            elif len(payload) != 5:
                self._stream_error(sid, FRAME_SIZE_ERROR, events)
            elif int.from_bytes(payload[:4], "big") & 0x7FFFFFFF == sid:
                self._stream_error(sid, PROTOCOL_ERROR, events)
        elif kind == GOAWAY:
            if sid:
                raise ConnectionFailure(PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise ConnectionFailure(FRAME_SIZE_ERROR, "GOAWAY of a wrong size")
            event = Event(TERMINATED, 0)
            event.code = int.from_bytes(payload[4:8], "big")
            events.append(event)
        elif kind == PUSH_PROMISE:
            raise ConnectionFailure(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        # other types are extensions this endpoint does not know: ignored (§5.5)

    def _check_known(self, sid: int, what: str) -> None:
        if not sid:
            raise ConnectionFailure(PROTOCOL_ERROR, f"{what} on stream 0")
        if sid > self.highest_inbound or not sid & 1:
            raise ConnectionFailure(PROTOCOL_ERROR, f"{what} on an idle stream")

    @staticmethod
    def _unpad(flags: int, payload: bytes) -> bytes:
        if not flags & PADDED:
            return payload
        if not payload:
            raise ConnectionFailure(FRAME_SIZE_ERROR, "a padded frame without its pad length")
        pad = payload[0]
        if pad >= len(payload):
            raise ConnectionFailure(PROTOCOL_ERROR, "padding longer than the frame")
        return payload[1 : len(payload) - pad]

    def _data(self, flags: int, sid: int, payload: bytes, events: list[Event]) -> None:
        self._check_known(sid, "DATA")
        size = len(payload)
        self.in_window -= size
        if self.in_window < 0:
            raise ConnectionFailure(FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        data = self._unpad(flags, payload)
        stream = self.streams.get(sid)
        if stream is None:
            # a closed stream (§5.4.2): ignored, its bytes given back to the connection
            if size:
                self.acknowledge(size, 0)
            return
        if not stream.remote_open:
            self._stream_error(sid, STREAM_CLOSED, events)
            if size:
                self.acknowledge(size, 0)
            return
        stream.in_window -= size
        if stream.in_window < 0:
            raise ConnectionFailure(FLOW_CONTROL_ERROR, "DATA beyond the stream window")
        if size:
            event = Event(BODY, sid)
            event.data = data
            event.size = size
            events.append(event)
        if flags & END_STREAM:
            self._remote_end(sid, stream, events)

    def _remote_end(self, sid: int, stream: StreamWindows, events: list[Event]) -> None:
        stream.remote_open = False
        if not stream.local_open:
            del self.streams[sid]
        events.append(Event(ENDED, sid))

    def _headers(self, flags: int, sid: int, payload: bytes, events: list[Event]) -> None:
        if not sid or not sid & 1:
            raise ConnectionFailure(PROTOCOL_ERROR, "HEADERS on stream 0 or an even stream")
        fragment = self._unpad(flags, payload)
        if flags & PRIORITY_FLAG:
            if len(fragment) < 5:
                if flags & PADDED and len(payload) >= 6:
                    # room for the priority fields, but the padding eats into them (§6.2)
                    raise ConnectionFailure(PROTOCOL_ERROR, "padding longer than the frame")
                raise ConnectionFailure(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            if int.from_bytes(fragment[:4], "big") & 0x7FFFFFFF == sid:
                # a stream depending on itself: a stream error, after the block is
                # decoded (below) so the compression state stays in step
                flags |= _SELF_DEPENDENT
            fragment = fragment[5:]
        self.block_sid = sid
        self.block_flags = flags
        self.block = [fragment]
        if flags & END_HEADERS:
            self._block_done(events)

    def _block_done(self, events: list[Event]) -> None:
        sid = self.block_sid
        flags = self.block_flags
        block = self.block[0] if len(self.block) == 1 else b"".join(self.block)
        self.block_sid = 0
        self.block = []
        try:
            headers = self.decoder.decode(block, raw=True)
        except OversizedHeaderListError:
            # an HPACK bomb: a small block that decodes past SETTINGS_MAX_HEADER_LIST_SIZE
            raise ConnectionFailure(ENHANCE_YOUR_CALM, "header list too large") from None
        except (HPACKError, IndexError, TypeError, ValueError) as exc:
            raise ConnectionFailure(COMPRESSION_ERROR, f"header block: {exc}") from None
        ended = bool(flags & END_STREAM)
        if sid > self.highest_inbound:
            self.highest_inbound = sid
            if flags & _SELF_DEPENDENT:
                self._stream_error(sid, PROTOCOL_ERROR, events, known=False)
                return
            if len(self.streams) >= self.max_streams:
                # past the advertised limit (§5.1.2): refused, and reported so that
                # the gateway counts it like an early reset
                self.out.append(rst_frame(sid, REFUSED_STREAM))
                self._note_reset(sid)
                events.append(Event(REFUSED, sid))
                return
            self.streams[sid] = StreamWindows(self.peer_window, self.initial_window, not ended)
            event = Event(REQUEST, sid)
            event.headers = headers
            event.ended = ended
            event.block = block
            event.checked = self.decoder.hit
            event.generation = self.decoder.generation
            events.append(event)
            if ended:
                events.append(Event(ENDED, sid))
            return
        stream = self.streams.get(sid)
        if stream is None:
            if sid in self.reset_ids:
                # a stream reset meanwhile (§5.4.2): dropped, but decoding it was work
                # that no request pays for, so it is counted (see events.py)
                self.ignored_blocks += 1
                return
            raise ConnectionFailure(PROTOCOL_ERROR, "HEADERS on a closed stream")
        if not stream.remote_open:
            self._stream_error(sid, STREAM_CLOSED, events)
        elif not ended or flags & _SELF_DEPENDENT:
            # a second header block must end the stream (trailers, RFC 9113 §8.1)
            self._stream_error(sid, PROTOCOL_ERROR, events)
        else:
            event = Event(TRAILERS, sid)
            event.headers = headers
            events.append(event)
            self._remote_end(sid, stream, events)

    def _stream_error(self, sid: int, code: int, events: list[Event], known: bool = True) -> None:
        """Reset one stream (RFC 9113 §5.4.2); the gateway hears of it as a reset."""
        self.out.append(rst_frame(sid, code))
        self._note_reset(sid)
        if known and self.streams.pop(sid, None) is not None:
            event = Event(RESET, sid)
            event.code = code
            events.append(event)

    def _window_update(self, sid: int, payload: bytes, events: list[Event]) -> None:
        if len(payload) != 4:
            raise ConnectionFailure(FRAME_SIZE_ERROR, "WINDOW_UPDATE of a wrong size")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if not sid:
            if not increment:
                raise ConnectionFailure(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.out_window += increment
            if self.out_window > MAX_WINDOW:
                raise ConnectionFailure(FLOW_CONTROL_ERROR, "connection window overflow")
            events.append(Event(WINDOW, 0))
            return
        self._check_known(sid, "WINDOW_UPDATE")
        stream = self.streams.get(sid)
        if stream is None:
            return
        if not increment:
            self._stream_error(sid, PROTOCOL_ERROR, events)
            return
        stream.out_window += increment
        if stream.out_window > MAX_WINDOW:
            self._stream_error(sid, FLOW_CONTROL_ERROR, events)
            return
        events.append(Event(WINDOW, sid))

    def _settings(self, flags: int, sid: int, payload: bytes, events: list[Event]) -> None:
        if sid:
            raise ConnectionFailure(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise ConnectionFailure(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise ConnectionFailure(FRAME_SIZE_ERROR, "SETTINGS of a wrong size")
        self.settings_seen = True
        for at in range(0, len(payload), 6):
            key = (payload[at] << 8) | payload[at + 1]
            value = int.from_bytes(payload[at + 2 : at + 6], "big")
            if key == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ConnectionFailure(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE")
                delta = value - self.peer_window
                self.peer_window = value
                for stream in self.streams.values():
                    stream.out_window += delta
                    if stream.out_window > MAX_WINDOW:
                        raise ConnectionFailure(FLOW_CONTROL_ERROR, "stream window overflow")
            elif key == MAX_FRAME_SIZE:
                if value < DEFAULT_FRAME or value > 16777215:
                    raise ConnectionFailure(PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE")
                self.max_frame = value
            elif key == HEADER_TABLE_SIZE:
                self.encoder.header_table_size = value
            elif key in (ENABLE_PUSH, ENABLE_CONNECT_PROTOCOL) and value > 1:
                raise ConnectionFailure(PROTOCOL_ERROR, "a SETTINGS flag other than 0 or 1")
        self.out.append(frame_head(0, SETTINGS, ACK, 0))
        events.append(Event(SETTINGS_CHANGED, 0))
