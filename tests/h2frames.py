"""HTTP/2 frames written and read by hand for the attack tests (tests/unit/test_http2_engine.py,
tests/integration/test_http2_frames_attack.py): the layout of RFC 9113 §4 and §6 spelled
out here rather than taken from bastion's own `http2/frames.py`, so that a mistake there
cannot hide in the tests' frames too."""

from __future__ import annotations

from dataclasses import dataclass

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# frame types (RFC 9113 §6)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0x5, 0x6, 0x7, 0x8, 0x9
# flags
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
# settings
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6
ENABLE_CONNECT_PROTOCOL = 0x8


def frame(kind: int, flags: int = 0, sid: int = 0, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + sid.to_bytes(4, "big") + payload


def settings_frame(*pairs: tuple[int, int]) -> bytes:
    body = b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in pairs)
    return frame(SETTINGS, 0, 0, body)


@dataclass
class Frame:
    """A frame the gateway sent."""

    kind: int
    flags: int
    sid: int
    payload: bytes

    @property
    def code(self) -> int:
        """RST_STREAM's or GOAWAY's error code."""
        if self.kind == GOAWAY:
            return int.from_bytes(self.payload[4:8], "big")
        return int.from_bytes(self.payload[:4], "big")

    @property
    def increment(self) -> int:
        """WINDOW_UPDATE's increment."""
        return int.from_bytes(self.payload, "big") & 0x7FFFFFFF
