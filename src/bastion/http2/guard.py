"""A frame-header scanner that bounds header blocks before `h2` buffers them.

`h2` (4.x) already refuses more than 64 CONTINUATION frames per block, but each
may carry a full frame of header bytes, so a block can grow to about a megabyte
before anything is decoded; an endless block of empty CONTINUATION frames also
keeps a stream half-open. The scanner reads only the 9-byte frame headers, so it
costs a few operations per frame, and reports a block that outgrows the limits.

It also counts frames that cost the gateway work but carry no request: PING and
SETTINGS (each one answered), PRIORITY, and empty DATA frames without END_STREAM
(the floods of CVE-2019-9512/9515/9518); the connection compares the count
with its limit per time window.
"""

from __future__ import annotations

from bastion.http2.frames import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    PING,
    PREFACE,
    PRIORITY,
    PUSH_PROMISE,
    SETTINGS,
)


class FrameGuard:
    __slots__ = (
        "block_bytes",
        "control",
        "frames",
        "in_block",
        "max_bytes",
        "max_frames",
        "partial",
        "preface",
        "skip",
    )

    def __init__(self, max_bytes: int, max_frames: int) -> None:
        self.max_bytes = max_bytes
        self.max_frames = max_frames
        self.preface = len(PREFACE)
        self.partial = b""  # the start of a frame header split across reads
        self.skip = 0  # payload bytes of the current frame still to pass over
        self.in_block = False  # a header block has started and not ended
        self.block_bytes = 0
        self.frames = 0
        self.control = 0  # frames without a request in them, since the last reset

    def feed(self, data: bytes) -> bool:
        """False when a header block is over the limits (the connection must go)."""
        pos = 0
        end = len(data)
        if self.preface:
            taken = min(self.preface, end)
            self.preface -= taken
            pos = taken
        while pos < end:
            if self.skip:
                taken = min(self.skip, end - pos)
                self.skip -= taken
                pos += taken
                continue
            need = 9 - len(self.partial)
            if end - pos < need:
                self.partial += data[pos:]
                return True
            header = self.partial + data[pos : pos + need] if self.partial else data[pos : pos + 9]
            self.partial = b""
            pos += need
            length = int.from_bytes(header[0:3], "big")
            kind = header[3]
            flags = header[4]
            self.skip = length
            if kind in (HEADERS, PUSH_PROMISE):
                if not flags & END_HEADERS:
                    self.in_block = True
                    self.block_bytes = length
                    self.frames = 0
            elif kind == DATA:
                if not length and not flags & END_STREAM:
                    self.control += 1
            elif kind in (PING, SETTINGS):
                if not flags & ACK:
                    self.control += 1
            elif kind == PRIORITY:
                self.control += 1
            elif kind == CONTINUATION:
                self.frames += 1
                self.block_bytes += length
                if self.block_bytes > self.max_bytes or self.frames > self.max_frames:
                    return False
                if flags & END_HEADERS:
                    self.in_block = False
        return True
