"""HTTP/2 frame layout (RFC 9113 §4 and §6): types, flags, setting ids, and the frames the
server writes whole."""

from __future__ import annotations

from typing import Final

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_WINDOW: Final = 2**31 - 1
DEFAULT_WINDOW: Final = 65535
DEFAULT_FRAME: Final = 16384

# frame types (RFC 9113 §6)
DATA: Final = 0x0
HEADERS: Final = 0x1
PRIORITY: Final = 0x2
RST_STREAM: Final = 0x3
SETTINGS: Final = 0x4
PUSH_PROMISE: Final = 0x5
PING: Final = 0x6
GOAWAY: Final = 0x7
WINDOW_UPDATE: Final = 0x8
CONTINUATION: Final = 0x9

# flags
END_STREAM: Final = 0x1
ACK: Final = 0x1
END_HEADERS: Final = 0x4
PADDED: Final = 0x8
PRIORITY_FLAG: Final = 0x20

# settings (RFC 9113 §6.5.2, RFC 8441)
HEADER_TABLE_SIZE: Final = 0x1
ENABLE_PUSH: Final = 0x2
MAX_CONCURRENT_STREAMS: Final = 0x3
INITIAL_WINDOW_SIZE: Final = 0x4
MAX_FRAME_SIZE: Final = 0x5
MAX_HEADER_LIST_SIZE: Final = 0x6
ENABLE_CONNECT_PROTOCOL: Final = 0x8


def frame_head(length: int, kind: int, flags: int, sid: int) -> bytes:
    return ((length << 48) | (kind << 40) | (flags << 32) | sid).to_bytes(9, "big")


def window_update(sid: int, increment: int) -> bytes:
    return frame_head(4, WINDOW_UPDATE, 0, sid) + increment.to_bytes(4, "big")


def goaway_frame(last_sid: int, code: int) -> bytes:
    return frame_head(8, GOAWAY, 0, 0) + last_sid.to_bytes(4, "big") + code.to_bytes(4, "big")


def rst_frame(sid: int, code: int) -> bytes:
    return frame_head(4, RST_STREAM, 0, sid) + code.to_bytes(4, "big")
