"""The send side of the HTTP/2 frame engine, and what it keeps of the connection and of
each stream: the two flow-control windows in each direction, the output buffer, the
streams this side reset. `Engine` (engine.py) adds the receive side on top."""

from __future__ import annotations

from typing import Any

from bastion.http2.decoder import MemoDecoder
from bastion.http2.frames import (
    CONTINUATION,
    DATA,
    DEFAULT_FRAME,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_HEADER_LIST_SIZE,
    SETTINGS,
    frame_head,
    goaway_frame,
    rst_frame,
    window_update,
)


class StreamWindows:
    """What the engine keeps of an open stream."""

    __slots__ = ("in_unacked", "in_window", "local_open", "out_window", "remote_open")

    def __init__(self, out_window: int, in_window: int, remote_open: bool) -> None:
        self.out_window = out_window  # what we may send
        self.in_window = in_window  # what the client may still send
        self.in_unacked = 0  # received and passed on, not yet returned with WINDOW_UPDATE
        self.remote_open = remote_open
        self.local_open = True


def _credit(unacked: int, window: int, target: int) -> bool:
    """Whether returned bytes should leave now as a WINDOW_UPDATE: once half the window is
    owed, or when the window is nearly shut (a small body then is not held up)."""
    return unacked >= target // 2 or window < min(DEFAULT_FRAME, target // 4)


class SendSide:
    """The connection's state and the frames this side sends."""

    def __init__(
        self,
        decoder: MemoDecoder,
        encoder: Any,
        max_streams: int,
        initial_window: int,
        max_header_list: int,
    ) -> None:
        self.decoder = decoder
        self.encoder = encoder  # encode(fields) -> block; header_table_size attribute
        self.max_streams = max_streams
        self.initial_window = initial_window  # ours: what a new stream may send us
        self.max_header_list = max_header_list
        self.streams: dict[int, StreamWindows] = {}
        self.highest_inbound = 0
        self.out: list[bytes] = []
        # the start of a frame cut across reads (engine.receive), and how long it must
        # grow before it is parsed again
        self.parts: list[bytes] = []
        self.parts_size = 0
        self.need = 0
        self.preface = False  # the client's preface was read
        self.settings_seen = False
        # the client's settings
        self.peer_window = DEFAULT_WINDOW
        self.max_frame = DEFAULT_FRAME
        # connection windows
        self.out_window = DEFAULT_WINDOW
        self.in_window = DEFAULT_WINDOW
        self.in_target = DEFAULT_WINDOW
        self.in_unacked = 0
        # a header block in progress: its stream, flags of its HEADERS frame, fragments
        self.block_sid = 0
        self.block_flags = 0
        self.block: list[bytes] = []
        # streams reset by this side whose client half may still send (§5.4.2), the
        # latest ones: frames on them are ignored, frames on other closed ids are errors
        self.reset_ids: dict[int, None] = {}
        # header blocks decoded for streams already reset, since the flood count's reset
        self.ignored_blocks = 0
        # connection window credited ahead per stream, not yet acknowledged
        self.ahead: dict[int, int] = {}

    # ------------------------------------------------------------------ start
    def initiate(self) -> None:
        """The server's preface: its SETTINGS."""
        settings = b"".join(
            key.to_bytes(2, "big") + value.to_bytes(4, "big")
            for key, value in (
                (MAX_CONCURRENT_STREAMS, self.max_streams),
                (MAX_HEADER_LIST_SIZE, self.max_header_list),
                (INITIAL_WINDOW_SIZE, self.initial_window),
            )
        )
        self.out.append(frame_head(len(settings), SETTINGS, 0, 0) + settings)

    def open_connection_window(self, increment: int, sid: int = 0) -> None:
        """Widen what the client may send on the connection (in all streams) by `increment`;
        with `sid`, for bytes that stream holds: their acknowledgement later is not credited
        to the connection again."""
        if increment <= 0:
            return
        if sid:
            self.ahead[sid] = self.ahead.get(sid, 0) + increment
        self.in_window += increment
        if self.in_window > self.in_target:
            self.in_target = self.in_window
        self.out.append(window_update(0, increment))

    def _note_reset(self, sid: int) -> None:
        ids = self.reset_ids
        ids[sid] = None
        if len(ids) > 2 * self.max_streams + 100:
            del ids[next(iter(ids))]

    def window(self, sid: int) -> int:
        """What may be sent on a stream now (its window and the connection's); -1 when
        the stream is closed."""
        stream = self.streams.get(sid)
        if stream is None or not stream.local_open:
            return -1
        window = min(stream.out_window, self.out_window)
        return window if window > 0 else 0

    def send_headers(self, sid: int, fields: list[tuple[bytes, bytes]], end: bool) -> bool:
        """HEADERS (and CONTINUATION) for an open stream; False when it is closed."""
        stream = self.streams.get(sid)
        if stream is None or not stream.local_open:
            return False
        block = self.encoder.encode(fields)
        limit = self.max_frame
        flags = END_STREAM if end else 0
        if len(block) <= limit:
            self.out.append(frame_head(len(block), HEADERS, flags | END_HEADERS, sid) + block)
        else:
            self.out.append(frame_head(limit, HEADERS, flags, sid) + block[:limit])
            at = limit
            while at < len(block):
                piece = block[at : at + limit]
                at += limit
                last = END_HEADERS if at >= len(block) else 0
                self.out.append(frame_head(len(piece), CONTINUATION, last, sid) + piece)
        if end:
            self._local_end(sid, stream)
        return True

    def send_data(self, sid: int, data: bytes, end: bool) -> bool:
        """One DATA frame within the windows and the frame size (the caller sizes it with
        `window` and `max_frame`); False when the stream is closed."""
        stream = self.streams.get(sid)
        if stream is None or not stream.local_open:
            return False
        size = len(data)
        stream.out_window -= size
        self.out_window -= size
        self.out.append(frame_head(size, DATA, END_STREAM if end else 0, sid))
        if size:
            self.out.append(data)
        if end:
            self._local_end(sid, stream)
        return True

    def _local_end(self, sid: int, stream: StreamWindows) -> None:
        stream.local_open = False
        if not stream.remote_open:
            del self.streams[sid]

    def reset_stream(self, sid: int, code: int) -> None:
        """RST_STREAM for a stream still open (a closed one needs none)."""
        if self.streams.pop(sid, None) is not None:
            self.out.append(rst_frame(sid, code))
            self._note_reset(sid)

    def acknowledge(self, size: int, sid: int) -> None:
        """`size` received bytes passed on: the windows they took are given back, in
        WINDOW_UPDATE frames batched until half a window is owed. A window is never
        reopened past its size: bytes credited ahead (`open_connection_window` for a
        waiting stream's body) are not credited twice."""
        if size <= 0:
            return
        ahead = self.ahead.get(sid, 0) if sid else 0
        if ahead:
            taken = min(ahead, size)
            if taken == ahead:
                del self.ahead[sid]
            else:
                self.ahead[sid] = ahead - taken
            self.in_unacked += size - taken
        else:
            self.in_unacked += size
        if self.in_unacked and _credit(self.in_unacked, self.in_window, self.in_target):
            increment = min(self.in_unacked, self.in_target - self.in_window)
            self.in_unacked = 0
            if increment > 0:
                self.in_window += increment
                self.out.append(window_update(0, increment))
        stream = self.streams.get(sid) if sid else None
        if stream is not None and stream.remote_open:
            stream.in_unacked += size
            target = self.initial_window
            if _credit(stream.in_unacked, stream.in_window, target):
                increment = min(stream.in_unacked, target - stream.in_window)
                stream.in_unacked = 0
                if increment > 0:
                    stream.in_window += increment
                    self.out.append(window_update(sid, increment))

    def close_connection(self, code: int) -> None:
        self.out.append(goaway_frame(self.highest_inbound, code))

    def data_to_send(self) -> bytes:
        out = self.out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        self.out = []
        return data
