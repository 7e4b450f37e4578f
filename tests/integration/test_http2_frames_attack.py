"""Hostile HTTP/2 frames through a real gateway over TLS, against a real backend.

The client here writes frames by hand (no `h2` state machine to refuse them) and reads
back every frame the gateway sends; each test asserts the frame that answers the attack
(RST_STREAM or GOAWAY with its code) and what the backend got of it.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpack import Decoder, Encoder
from test_http2 import h2_config, https_port, root_ca, start

from conftest import Backend, Gateway
from h2frames import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_HEADER_LIST_SIZE,
    PING,
    PREFACE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    Frame,
    frame,
    settings_frame,
)

NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, REFUSED_STREAM = 0x0, 0x1, 0x3, 0x7
COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x9, 0xB

WINDOW = 256 * 1024  # http2.initial_window (default)


def data_frames(sid: int, size: int, end: bool = False, fill: bytes = b"d") -> bytes:
    """`size` body bytes in DATA frames of at most 16384 (the last with END_STREAM)."""
    out = []
    left = size
    while True:
        piece = min(left, 16384)
        left -= piece
        out.append(frame(DATA, END_STREAM if end and not left else 0, sid, fill * piece))
        if not left:
            return b"".join(out)


@dataclass
class Seen:
    """What the gateway sent, per stream and for the connection."""

    statuses: dict[int, int] = field(default_factory=dict)
    bodies: dict[int, bytes] = field(default_factory=dict)
    ended: set[int] = field(default_factory=set)
    resets: dict[int, int] = field(default_factory=dict)
    goaway: Frame | None = None
    settings: dict[int, int] = field(default_factory=dict)
    closed: bool = False


class Wire:
    """One TLS connection speaking h2 frame by frame."""

    def __init__(self, port: int, cafile: Path, *pairs: tuple[int, int]) -> None:
        context = ssl.create_default_context(cafile=str(cafile))
        context.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        assert self.sock.selected_alpn_protocol() == "h2"
        self.encoder = Encoder()
        self.decoder = Decoder()
        self.buf = b""
        self.block: list[bytes] = []
        self.seen = Seen()
        self.pings = 0  # the highest PING answered
        self.pings_sent = 0
        self.send(PREFACE + settings_frame(*pairs))

    def send(self, *frames: bytes) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            self.sock.sendall(b"".join(frames))

    def headers(
        self,
        sid: int,
        path: str,
        method: str = "GET",
        extra: Iterable[tuple[str, str]] = (),
        end: bool = True,
    ) -> bytes:
        fields = [(":method", method), (":scheme", "https"), (":authority", "localhost")]
        block = self.encoder.encode([*fields, (":path", path), *extra])
        return frame(HEADERS, END_HEADERS | (END_STREAM if end else 0), sid, block)

    def read(self, done: Callable[[Seen], bool], timeout: float = 10.0) -> Seen:
        """Frames until `done(seen)` holds, the gateway closes, or `timeout` passes."""
        seen = self.seen
        deadline = time.monotonic() + timeout
        self.sock.settimeout(0.2)
        while not done(seen) and not seen.closed and time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except (ConnectionError, ssl.SSLError):
                chunk = b""
            if not chunk:
                seen.closed = True
                break
            self.buf += chunk
            while len(self.buf) >= 9:
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) < 9 + length:
                    break
                head, self.buf = self.buf[: 9 + length], self.buf[9 + length :]
                sid = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
                self._note(Frame(head[3], head[4], sid, head[9:]))
        return seen

    def _note(self, f: Frame) -> None:
        seen = self.seen
        if f.kind in (HEADERS, CONTINUATION):
            self.block.append(f.payload)
            if f.flags & END_HEADERS:
                fields = dict(self.decoder.decode(b"".join(self.block), raw=True))
                self.block = []
                status = int(fields[b":status"])
                if status >= 200:
                    seen.statuses[f.sid] = status
        elif f.kind == DATA:
            seen.bodies[f.sid] = seen.bodies.get(f.sid, b"") + f.payload
            if f.payload:  # give the windows back: the answers here are small
                increment = len(f.payload).to_bytes(4, "big")
                self.send(frame(WINDOW_UPDATE, 0, 0, increment))
        elif f.kind == RST_STREAM:
            seen.resets[f.sid] = f.code
        elif f.kind == GOAWAY:
            seen.goaway = f
        elif f.kind == SETTINGS and not f.flags & ACK:
            for at in range(0, len(f.payload), 6):
                key = int.from_bytes(f.payload[at : at + 2], "big")
                seen.settings[key] = int.from_bytes(f.payload[at + 2 : at + 6], "big")
            self.send(frame(SETTINGS, ACK, 0))
        elif f.kind == PING and f.flags & ACK:
            self.pings = max(self.pings, int.from_bytes(f.payload, "big"))
        if f.kind in (HEADERS, DATA) and f.flags & END_STREAM:
            seen.ended.add(f.sid)

    def barrier(self) -> Seen:
        """Everything sent so far was handled: the PING's answer comes after it."""
        self.pings_sent += 1
        mark = self.pings_sent
        self.send(frame(PING, 0, 0, mark.to_bytes(8, "big")))
        seen = self.read(lambda _: self.pings >= mark)
        assert self.pings >= mark or seen.closed, "no PING answer"
        return seen

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def gateway_for(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway], **extra: Any
) -> Callable[..., Wire]:
    config = h2_config(tmp_path, backend, **extra)
    start(gateway, config)
    port = https_port(config)
    return lambda *pairs: Wire(port, root_ca(tmp_path), *pairs)


def paths_received(backend: Backend, settle: float = 0.5) -> list[str]:
    """The paths of the requests the backend read in full, after `settle` seconds for
    the ones on their way."""
    time.sleep(settle)
    return sorted(entry["path"] for entry in backend.requests)


# ------------------------------------------------------------------ flow control
def test_data_past_the_stream_window_closes_with_flow_control_error(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    """A stream held back (http2.max_uploads: 1) keeps its window closed: one byte past
    the 256 KiB the gateway advertised is a connection error (RFC 9113 §6.9.1)."""
    connect = gateway_for(tmp_path, backend, gateway, http2={"max_uploads": 1})
    wire = connect()
    wire.barrier()
    assert wire.seen.settings[INITIAL_WINDOW_SIZE] == WINDOW
    # stream 1 takes the one upload slot (its body never comes), stream 3 waits
    wire.send(wire.headers(1, "/running", "POST", [("content-length", "10")], end=False))
    wire.send(wire.headers(3, "/waiting", "POST", [("content-length", "999999")], end=False))
    wire.barrier()
    wire.send(data_frames(3, WINDOW))
    seen = wire.barrier()
    assert seen.goaway is None and not seen.resets  # the whole window was fine
    wire.send(data_frames(3, 1))
    seen = wire.read(lambda s: s.goaway is not None)
    wire.close()
    assert seen.goaway is not None and seen.goaway.code == FLOW_CONTROL_ERROR
    assert paths_received(backend) == []


def test_a_negative_send_window_is_waited_out(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    """RFC 9113 §6.9.2: a client lowering SETTINGS_INITIAL_WINDOW_SIZE can leave a
    stream's send window negative; the sender "MUST track the negative flow-control
    window" and resume once WINDOW_UPDATE makes it positive. The answer must then
    complete (or at worst be reset, never left hanging)."""
    connect = gateway_for(tmp_path, backend, gateway)
    wire = connect()
    size = 200_000
    wire.send(wire.headers(1, f"/bytes?n={size}"))
    # read until the stream's 65535-byte window is spent (the client returns only the
    # connection's)
    wire.read(lambda s: len(s.bodies.get(1, b"")) >= 65535 or bool(s.resets), timeout=10)
    sent = len(wire.seen.bodies.get(1, b""))
    assert sent == 65535
    # shrink: the stream's window becomes 1000 - 65535; then open everything again
    wire.send(settings_frame((INITIAL_WINDOW_SIZE, 1000)))
    wire.barrier()
    wire.send(
        settings_frame((INITIAL_WINDOW_SIZE, 65535)),
        frame(WINDOW_UPDATE, 0, 1, (10 * size).to_bytes(4, "big")),
        frame(WINDOW_UPDATE, 0, 0, (10 * size).to_bytes(4, "big")),
    )
    seen = wire.read(lambda s: 1 in s.ended or 1 in s.resets, timeout=3)
    wire.close()
    assert seen.statuses.get(1) == 200
    assert 1 in seen.ended or 1 in seen.resets, (
        f"stream 1 left hanging after {len(seen.bodies.get(1, b''))} of {size} bytes"
    )
    assert 1 in seen.ended and len(seen.bodies[1]) == size


# ------------------------------------------------------------------ Content-Length
def test_a_body_longer_than_its_content_length_in_one_write(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    connect = gateway_for(tmp_path, backend, gateway)
    wire = connect()
    wire.send(
        wire.headers(1, "/long", "POST", [("content-length", "10")], end=False),
        frame(DATA, END_STREAM, 1, b"x" * 11),
        wire.headers(3, "/fine"),
    )
    seen = wire.read(lambda s: 1 in s.resets and 3 in s.ended)
    wire.close()
    assert seen.resets == {1: PROTOCOL_ERROR}
    assert seen.statuses == {3: 200}
    assert seen.goaway is None
    assert paths_received(backend) == ["/fine"]


def test_a_body_growing_past_its_content_length_after_dispatch(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    """Half the body is forwarded first; the DATA that overruns the length resets the
    stream, and the backend never reads a complete request."""
    connect = gateway_for(tmp_path, backend, gateway)
    wire = connect()
    wire.send(
        wire.headers(1, "/long", "POST", [("content-length", "10")], end=False),
        frame(DATA, 0, 1, b"x" * 5),
    )
    wire.barrier()
    time.sleep(0.2)  # the request and its 5 bytes are on their way upstream
    wire.send(frame(DATA, END_STREAM, 1, b"y" * 6), wire.headers(3, "/fine"))
    seen = wire.read(lambda s: 1 in s.resets and 3 in s.ended)
    wire.close()
    assert seen.resets == {1: PROTOCOL_ERROR}
    assert 1 not in seen.statuses
    assert seen.statuses == {3: 200}
    assert paths_received(backend) == ["/fine"]


def test_a_body_reaching_its_content_length_then_overrunning_it(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    """RFC 9113 §8.1.1: a request whose DATA add up to more than its content-length is
    malformed. Here the first DATA frame carries exactly content-length bytes and no
    END_STREAM; one more byte follows later. The body is streamed upstream as it comes
    (as nginx does with request buffering off), so the backend may already have read a
    request complete with its declared body; what the gateway promises is that the
    extra byte never reaches it (the upstream framing stays what the head declared) and
    that the stream ends: reset, or answered and then reset as RFC 9113 §8.1 allows."""
    connect = gateway_for(tmp_path, backend, gateway)
    wire = connect()
    wire.send(
        wire.headers(1, "/exact", "POST", [("content-length", "10")], end=False),
        frame(DATA, 0, 1, b"x" * 10),
    )
    wire.barrier()
    time.sleep(0.3)
    wire.send(frame(DATA, END_STREAM, 1, b"!"), wire.headers(3, "/fine"))
    seen = wire.read(lambda s: 1 in s.resets and 3 in s.ended)
    wire.close()
    assert seen.resets[1] in (PROTOCOL_ERROR, NO_ERROR)
    assert seen.statuses.get(3) == 200 and seen.goaway is None
    time.sleep(0.5)
    bodies = {entry["path"]: entry["body_len"] for entry in backend.requests}
    assert bodies.get("/exact", 10) == 10  # never 11: the extra byte is not forwarded
    assert "/fine" in bodies


def test_a_body_shorter_than_its_content_length(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    connect = gateway_for(tmp_path, backend, gateway)
    wire = connect()
    # in one write: never dispatched
    wire.send(
        wire.headers(1, "/short", "POST", [("content-length", "10")], end=False),
        frame(DATA, END_STREAM, 1, b"x" * 5),
        wire.headers(3, "/fine"),
    )
    seen = wire.read(lambda s: 1 in s.resets and 3 in s.ended)
    assert seen.resets == {1: PROTOCOL_ERROR}
    # after its dispatch: the first bytes went upstream, the END_STREAM comes early
    wire.send(
        wire.headers(5, "/short-later", "POST", [("content-length", "10")], end=False),
        frame(DATA, 0, 5, b"x" * 5),
    )
    wire.barrier()
    time.sleep(0.2)
    wire.send(frame(DATA, END_STREAM, 5, b"y" * 4), wire.headers(7, "/fine-again"))
    seen = wire.read(lambda s: 5 in s.resets and 7 in s.ended)
    wire.close()
    assert seen.resets == {1: PROTOCOL_ERROR, 5: PROTOCOL_ERROR}
    assert seen.statuses == {3: 200, 7: 200}
    assert seen.goaway is None
    assert paths_received(backend) == ["/fine", "/fine-again"]


# ------------------------------------------------------------------ stream limit
def test_a_stream_past_max_concurrent_streams_is_refused(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    connect = gateway_for(tmp_path, backend, gateway, http2={"max_concurrent_streams": 2})
    wire = connect()
    wire.barrier()
    assert wire.seen.settings[MAX_CONCURRENT_STREAMS] == 2
    wire.send(*(wire.headers(sid, f"/slow?s=0.5&sid={sid}") for sid in (1, 3, 5)))
    seen = wire.read(lambda s: {1, 3} <= s.ended and 5 in s.resets)
    assert seen.resets == {5: REFUSED_STREAM}
    assert seen.statuses == {1: 200, 3: 200}
    # the connection goes on: the places are free again
    wire.send(wire.headers(7, "/after"))
    seen = wire.read(lambda s: 7 in s.ended)
    wire.close()
    assert seen.statuses[7] == 200
    assert seen.goaway is None
    assert paths_received(backend, 0) == ["/after", "/slow?s=0.5&sid=1", "/slow?s=0.5&sid=3"]


# ------------------------------------------------------------------ HPACK bomb
def _bomb(limit: int) -> bytes:
    """A block well under 16 kB that decodes past `limit`: one 4000-byte field added to
    the dynamic table (RFC 7541 §6.2.1), then one-byte references to it (index 62)."""
    value = b"b" * 4000
    tail = []
    rest = len(value) - 127
    while rest >= 128:
        tail.append((rest & 0x7F) | 0x80)
        rest >>= 7
    tail.append(rest)
    literal = b"\x40\x05x-big\x7f" + bytes(tail) + value
    head = b"\x83\x87\x41\x09localhost\x04\x05/bomb"  # POST https localhost /bomb
    references = limit // 4000 + 10
    block = head + literal + b"\xbe" * references
    assert len(block) < 16384
    return block


def test_an_hpack_bomb_closes_the_connection(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    connect = gateway_for(tmp_path, backend, gateway)
    wire = connect()
    wire.barrier()
    limit = wire.seen.settings[MAX_HEADER_LIST_SIZE]
    block = _bomb(limit)
    wire.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, block))
    seen = wire.read(lambda s: s.goaway is not None)
    wire.close()
    assert seen.goaway is not None
    assert seen.goaway.code in (ENHANCE_YOUR_CALM, COMPRESSION_ERROR)
    assert not seen.statuses
    assert paths_received(backend) == []
    # the worker is fine
    wire = connect()
    wire.send(wire.headers(1, "/after"))
    seen = wire.read(lambda s: 1 in s.ended)
    wire.close()
    assert seen.statuses == {1: 200}


def test_an_hpack_bomb_built_on_an_earlier_request(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    """The big entry arrives with a harmless request (answered); the next block is only
    references to it."""
    connect = gateway_for(tmp_path, backend, gateway)
    wire = connect()
    wire.barrier()
    limit = wire.seen.settings[MAX_HEADER_LIST_SIZE]
    wire.send(wire.headers(1, "/first", extra=[("x-big", "b" * 4000)]))
    seen = wire.read(lambda s: 1 in s.ended)
    assert seen.statuses == {1: 200}
    # GET https / and :authority as a literal not added to the table: index 62 stays x-big
    refs = b"\x82\x87\x84\x01\x09localhost" + b"\xbe" * (limit // 4000 + 10)
    wire.send(frame(HEADERS, END_HEADERS | END_STREAM, 3, refs))
    seen = wire.read(lambda s: s.goaway is not None)
    wire.close()
    assert seen.goaway is not None
    assert seen.goaway.code in (ENHANCE_YOUR_CALM, COMPRESSION_ERROR)
    assert 3 not in seen.statuses
    assert paths_received(backend) == ["/first"]


# ----------------------------------------------------------------------- GOAWAY
def test_a_graceful_goaway_from_the_client_lets_its_open_streams_finish(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    """RFC 9113 §6.8: a client's GOAWAY(NO_ERROR) says it opens no more streams; those
    it opened are still answered, then the gateway says GOAWAY too and closes. An
    error code fails the connection at once."""
    connect = gateway_for(tmp_path, backend, gateway)
    wire = connect()
    goaway = (1).to_bytes(4, "big") + NO_ERROR.to_bytes(4, "big")
    wire.send(wire.headers(1, "/slow?s=0.5"), frame(GOAWAY, 0, 0, goaway))
    seen = wire.read(lambda s: 1 in s.ended and s.closed)
    wire.close()
    assert seen.statuses == {1: 200}
    assert b'"slow": true' in seen.bodies[1]
    assert seen.goaway is not None and seen.goaway.code == NO_ERROR
    assert int.from_bytes(seen.goaway.payload[:4], "big") == 1
    assert seen.closed

    wire = connect()
    failing = (0).to_bytes(4, "big") + PROTOCOL_ERROR.to_bytes(4, "big")
    wire.send(wire.headers(1, "/slow?s=0.5"), frame(GOAWAY, 0, 0, failing))
    seen = wire.read(lambda s: s.closed, timeout=5)
    wire.close()
    assert seen.closed and 1 not in seen.statuses


# ----------------------------------------------------------------------- fields
def test_cookie_crumbs_reach_the_upstream_as_one_field(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    """RFC 9113 §8.2.3: a client may split Cookie into one field per crumb; an HTTP/1.1
    upstream gets them joined with "; " in one field."""
    connect = gateway_for(tmp_path, backend, gateway)
    wire = connect()
    crumbs = [("cookie", "a=1"), ("x-other", "v"), ("cookie", "b=2"), ("cookie", "c=3")]
    wire.send(wire.headers(1, "/crumbs", extra=crumbs))
    seen = wire.read(lambda s: 1 in s.ended)
    wire.close()
    assert seen.statuses == {1: 200}
    time.sleep(0.3)
    (entry,) = backend.requests
    cookies = [value for name, value in entry["headers"] if name == "cookie"]
    assert cookies == ["a=1; b=2; c=3"]


def test_a_repeated_header_block_is_checked_like_the_first(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    """A request repeated with the same header block bytes is decoded from the memo and
    its field scans are skipped only if it passed them before: the same malformed block
    sent again is reset again, and never reaches the backend."""
    connect = gateway_for(tmp_path, backend, gateway)
    wire = connect()
    # never-indexed literals: the same bytes each time, and a block the memo keeps
    bad = [(":method", "GET"), (":scheme", "https"), (":authority", "localhost")]
    bad_block = wire.encoder.encode([*bad, (":path", "/bad"), ("x-bad", "a\x01b", True)])
    good_block = wire.encoder.encode([*bad, (":path", "/good"), ("x-good", "ok", True)])
    again_bad = wire.encoder.encode([*bad, (":path", "/bad"), ("x-bad", "a\x01b", True)])
    again_good = wire.encoder.encode([*bad, (":path", "/good"), ("x-good", "ok", True)])
    flags = END_HEADERS | END_STREAM
    wire.send(frame(HEADERS, flags, 1, bad_block), frame(HEADERS, flags, 3, good_block))
    wire.read(lambda s: 1 in s.resets and 3 in s.ended)
    wire.send(frame(HEADERS, flags, 5, again_bad), frame(HEADERS, flags, 7, again_good))
    wire.send(frame(HEADERS, flags, 9, again_bad), frame(HEADERS, flags, 11, again_good))
    seen = wire.read(lambda s: {5, 9} <= set(s.resets) and {7, 11} <= s.ended)
    wire.close()
    assert seen.resets == {1: PROTOCOL_ERROR, 5: PROTOCOL_ERROR, 9: PROTOCOL_ERROR}
    assert seen.statuses == {3: 200, 7: 200, 11: 200}
    assert paths_received(backend) == ["/good", "/good", "/good"]


# ------------------------------------------------------------------ the decoder's memo
def _literal_indexed(name: bytes, value: bytes) -> bytes:
    """A literal field with incremental indexing, new name, no Huffman (RFC 7541 §6.2.1)."""
    return bytes((0x40, len(name))) + name + bytes((len(value),)) + value


def test_a_memo_entry_replaced_in_the_same_read_keeps_no_checked_mark(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    """The decoder's memo marks a block "checked" once its request passed the field
    scans; the mark must belong to the decoded list that was scanned. Here block X
    (static fields and dynamic index 62) first decodes to a clean field (stream 3); in
    the same read, stream 5 inserts a field with CR LF in its value (malformed: reset,
    but the HPACK table keeps it) and stream 7 repeats X, which now decodes to that
    field (malformed: reset). Stream 3's request is checked after all three were
    decoded, so its mark must not land on stream 7's list: a later X (stream 9) is
    scanned again, and the CR LF never reaches the backend."""
    connect = gateway_for(tmp_path, backend, gateway)
    wire = connect()
    base = b"\x82\x87" + b"\x04\x0a/memo-test" + b"\x01\x09localhost"  # GET https /memo-test
    block_x = base + b"\xbe"  # ... and the newest dynamic table entry
    wire.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, base + _literal_indexed(b"x-a", b"ok")))
    seen = wire.read(lambda s: 1 in s.ended or 1 in s.resets)
    evil = _literal_indexed(b"x-a", b"ok\r\nx-smuggled: yes")
    wire.send(
        frame(HEADERS, END_HEADERS | END_STREAM, 3, block_x)
        + frame(HEADERS, END_HEADERS | END_STREAM, 5, base + evil)
        + frame(HEADERS, END_HEADERS | END_STREAM, 7, block_x)
    )
    wire.barrier()
    wire.send(frame(HEADERS, END_HEADERS | END_STREAM, 9, block_x))
    seen = wire.read(lambda s: 9 in s.ended or 9 in s.resets)
    wire.close()
    assert seen.resets.get(5) == PROTOCOL_ERROR and seen.resets.get(7) == PROTOCOL_ERROR
    time.sleep(0.5)
    smuggled = [e for e in backend.requests if any(k == "x-smuggled" for k, _ in e["headers"])]
    assert smuggled == [], smuggled
    assert seen.resets.get(9) == PROTOCOL_ERROR


def test_body_bytes_of_streams_answered_without_reading_them_go_back_to_the_window(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    """A stream answered without its body being read (a POST to a static file) drops the
    bytes that came with its HEADERS, held until its answer: their share of the
    connection window is given back. 100 such streams of 15,000 bytes are more than the
    1 MiB connection window: were the bytes kept from it, a flow-control error would end
    the connection."""
    connect = gateway_for(tmp_path, backend, gateway)
    wire = connect()
    size = 15_000  # HEADERS and DATA in one TLS record: one read, before the dispatch
    for sid in range(1, 201, 2):
        headers = [("content-length", str(2 * size))]
        head = wire.headers(sid, "/files/hello.txt", "POST", headers, end=False)
        wire.send(head + frame(DATA, 0, sid, b"u" * size))
        seen = wire.read(lambda s, sid=sid: sid in s.resets or s.closed)
        assert not seen.closed and seen.goaway is None, f"stream {sid}: {seen.goaway}"
        assert sid in seen.statuses
    wire.send(wire.headers(201, "/files/hello.txt"))
    seen = wire.read(lambda s: 201 in s.ended)
    wire.close()
    assert seen.statuses[201] == 200 and seen.goaway is None


def test_header_blocks_for_a_reset_stream_are_a_flood_past_the_limit(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    """A HEADERS frame for a stream the gateway reset is decoded and dropped (it may be
    a trailer section in flight, RFC 9113 §5.4.2), and no request is counted for it: past
    1000 such blocks within 10 seconds the connection is closed like other floods."""
    connect = gateway_for(tmp_path, backend, gateway)
    wire = connect()
    fields = [(":method", "GET"), (":scheme", "https"), (":authority", "localhost")]
    malformed = wire.encoder.encode([*fields, (":path", "/x"), ("X-Upper", "1")])
    wire.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, malformed))
    assert wire.read(lambda s: 1 in s.resets).resets[1] == PROTOCOL_ERROR
    trailer = wire.encoder.encode([("x-trailer", "t", True)])  # never indexed
    wire.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, trailer) * 1001)
    seen = wire.read(lambda s: s.goaway is not None or s.closed)
    wire.close()
    assert seen.goaway is not None and seen.goaway.code == ENHANCE_YOUR_CALM
    assert paths_received(backend, settle=0.2) == []
