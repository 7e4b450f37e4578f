"""The HTTP/2 frame engine (http2/engine.py) driven with bytes, as a hostile client would.

Frames are built by hand from RFC 9113 §4 and §6 (the constants are written out here
rather than imported from frames.py, so the tests check the wire layout, not the
engine's own names for it); request header blocks are encoded with `hpack`.
Each connection error asserts its exact code; each stream error the RST_STREAM the
engine writes and the event it reports.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest
from hpack import Decoder, Encoder

from bastion.http2.decoder import MemoDecoder
from bastion.http2.encoder import StaticEncoder
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
    Engine,
    Event,
)
from bastion.http2.errors import (
    CANCEL,
    COMPRESSION_ERROR,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    NO_ERROR,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    STREAM_CLOSED,
    ConnectionFailure,
)
from h2frames import (
    ACK,
    CONTINUATION,
    DATA,
    ENABLE_CONNECT_PROTOCOL,
    ENABLE_PUSH,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADER_TABLE_SIZE,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    MAX_HEADER_LIST_SIZE,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    Frame,
    frame,
    settings_frame,
)

MAX_WINDOW = 2**31 - 1


# ------------------------------------------------------------------ frames in
settings = settings_frame


def window_update(sid: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, sid, increment.to_bytes(4, "big"))


def rst(sid: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, sid, code.to_bytes(4, "big"))


def ping(data: bytes = b"12345678", ack: bool = False) -> bytes:
    return frame(PING, ACK if ack else 0, 0, data)


def data(sid: int, body: bytes, end: bool = False, pad: int | None = None) -> bytes:
    if pad is None:
        return frame(DATA, END_STREAM if end else 0, sid, body)
    payload = bytes((pad,)) + body + b"\0" * pad
    return frame(DATA, (END_STREAM if end else 0) | PADDED, sid, payload)


def priority(sid: int, depends_on: int, weight: int = 15) -> bytes:
    return frame(PRIORITY, 0, sid, depends_on.to_bytes(4, "big") + bytes((weight,)))


def goaway(last: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, last.to_bytes(4, "big") + code.to_bytes(4, "big") + debug)


# ------------------------------------------------------------------ frames out
Out = Frame


def parse(wire: bytes) -> list[Out]:
    frames = []
    pos = 0
    while pos < len(wire):
        assert len(wire) - pos >= 9, "a partial frame header"
        length = int.from_bytes(wire[pos : pos + 3], "big")
        end = pos + 9 + length
        assert end <= len(wire), "a partial frame"
        sid = int.from_bytes(wire[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
        frames.append(Out(wire[pos + 3], wire[pos + 4], sid, wire[pos + 9 : end]))
        pos = end
    return frames


# ------------------------------------------------------------------ the client
@dataclass
class Seen:
    """An event, as a comparable record."""

    kind: int
    sid: int
    data: bytes = b""
    size: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    ended: bool = False
    code: int = 0


def seen(events: Iterable[Event]) -> list[Seen]:
    return [
        Seen(e.kind, e.sid, e.data, e.size, [tuple(h) for h in e.headers], e.ended, e.code)
        for e in events
    ]


def kinds(events: Iterable[Seen]) -> list[tuple[int, int]]:
    return [(e.kind, e.sid) for e in events]


def request_fields(path: str = "/", method: str = "GET") -> list[tuple[str, str]]:
    return [(":method", method), (":scheme", "https"), (":authority", "h"), (":path", path)]


class Client:
    """A client facing one fresh engine: it encodes blocks and reads what comes back."""

    def __init__(
        self,
        max_streams: int = 100,
        initial_window: int = 65535,
        max_header_list: int = 65536,
    ) -> None:
        self.engine = Engine(
            MemoDecoder(max_header_list),
            StaticEncoder(),
            max_streams,
            initial_window,
            max_header_list,
        )
        self.engine.initiate()
        self.greeting = parse(self.engine.data_to_send())
        self.hpack = Encoder()
        self.decoder = Decoder()

    def block(self, path: str = "/", extra: Iterable[tuple[str, str]] = ()) -> bytes:
        return self.hpack.encode([*request_fields(path), *extra])

    def headers(
        self,
        sid: int,
        path: str = "/",
        end: bool = True,
        extra: Iterable[tuple[str, str]] = (),
    ) -> bytes:
        flags = END_HEADERS | (END_STREAM if end else 0)
        return frame(HEADERS, flags, sid, self.block(path, extra))

    def trailers(self, sid: int, end: bool = True) -> bytes:
        flags = END_HEADERS | (END_STREAM if end else 0)
        return frame(HEADERS, flags, sid, self.hpack.encode([("x-trailer", "t")]))

    def feed(self, wire: bytes) -> list[Seen]:
        return seen(self.engine.receive(wire))

    def start(self, *pairs: tuple[int, int]) -> list[Seen]:
        events = self.feed(PREFACE + settings(*pairs))
        assert kinds(events) == [(SETTINGS_CHANGED, 0)]
        assert [(f.kind, f.flags) for f in self.out()] == [(SETTINGS, ACK)]
        return events

    def out(self) -> list[Out]:
        return parse(self.engine.data_to_send())

    def fails(self, wire: bytes, code: int) -> ConnectionFailure:
        with pytest.raises(ConnectionFailure) as caught:
            self.engine.receive(wire)
        assert caught.value.code == code, caught.value.reason
        return caught.value


def started(**kwargs: int) -> Client:
    client = Client(**kwargs)
    client.start()
    return client


# =================================================================== the preface
def test_the_server_preface_advertises_its_limits() -> None:
    client = Client(max_streams=7, initial_window=100000, max_header_list=5000)
    (greeting,) = client.greeting
    assert (greeting.kind, greeting.flags, greeting.sid) == (SETTINGS, 0, 0)
    body = greeting.payload
    values = {
        int.from_bytes(body[i : i + 2], "big"): int.from_bytes(body[i + 2 : i + 6], "big")
        for i in range(0, len(body), 6)
    }
    assert values == {
        MAX_CONCURRENT_STREAMS: 7,
        MAX_HEADER_LIST_SIZE: 5000,
        INITIAL_WINDOW_SIZE: 100000,
    }


@pytest.mark.parametrize(
    "wire",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PRI * HTTP/1.1\r\n\r\nSM\r\n\r\n",
        b"PRX",  # wrong before the preface is even complete
        PREFACE[:-1] + b"X" + settings(),
    ],
)
def test_a_bad_preface_is_a_protocol_error(wire: bytes) -> None:
    Client().fails(wire, PROTOCOL_ERROR)


def test_the_preface_may_arrive_split_across_reads() -> None:
    client = Client()
    wire = PREFACE + settings() + ping(b"pingpong")
    events: list[Seen] = []
    for i in range(len(wire)):
        events += client.feed(wire[i : i + 1])
    assert kinds(events) == [(SETTINGS_CHANGED, 0)]
    out = client.out()
    assert [(f.kind, f.flags, f.payload) for f in out] == [
        (SETTINGS, ACK, b""),
        (PING, ACK, b"pingpong"),
    ]


@pytest.mark.parametrize(
    "first",
    [
        ping(),
        frame(SETTINGS, ACK),  # an ACK is not the client's SETTINGS
        window_update(0, 100),
        frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\x82\x84\x87"),
        frame(0x42, 0, 0, b"unknown"),
    ],
)
def test_the_first_frame_must_be_settings(first: bytes) -> None:
    Client().fails(PREFACE + first, PROTOCOL_ERROR)


def test_settings_on_a_stream_is_a_protocol_error() -> None:
    Client().fails(PREFACE + frame(SETTINGS, 0, 1, b""), PROTOCOL_ERROR)


# =================================================================== frame size
def test_a_frame_over_16384_bytes_is_a_frame_size_error() -> None:
    client = started()
    client.feed(client.headers(1, end=False))
    # the length alone condemns it: the engine does not wait for the 16385 bytes
    client.fails(
        (16385).to_bytes(3, "big") + bytes((DATA, 0)) + (1).to_bytes(4, "big"), FRAME_SIZE_ERROR
    )


def test_a_frame_of_exactly_16384_bytes_is_fine() -> None:
    client = started()
    client.feed(client.headers(1, end=False))
    events = client.feed(data(1, b"x" * 16384))
    assert [(e.kind, e.size) for e in events] == [(BODY, 16384)]


def test_an_unknown_frame_over_the_size_is_still_a_frame_size_error() -> None:
    client = started()
    client.fails((20000).to_bytes(3, "big") + b"\x42\0\0\0\0\0", FRAME_SIZE_ERROR)


def _conversation(client: Client) -> bytes:
    """Every kind of frame a client sends, once (trailers, padding, CONTINUATION, ...)."""
    block = client.block("/split", [("x-long", "v" * 40)])
    return b"".join(
        [
            PREFACE,
            settings((INITIAL_WINDOW_SIZE, 100000), (HEADER_TABLE_SIZE, 1024)),
            frame(HEADERS, 0, 1, block[:10]),
            frame(CONTINUATION, 0, 1, block[10:30]),
            frame(CONTINUATION, END_HEADERS, 1, block[30:]),
            data(1, b"hello"),
            data(1, b"padded", pad=7),
            priority(1, 0),
            ping(b"abcdefgh"),
            window_update(0, 1000),
            window_update(1, 1000),
            frame(0x42, 0xFF, 9, b"ignored"),
            client.trailers(1),
            client.headers(3, "/second"),
            client.headers(5, "/third", end=False),
            rst(5, CANCEL),
            goaway(5, NO_ERROR, b"bye"),
        ]
    )


def test_frames_split_at_every_byte_give_the_same_events_as_whole() -> None:
    whole = Client()
    wire = _conversation(whole)
    expected = whole.feed(wire)
    expected_out = whole.out()
    assert kinds(expected) == [
        (SETTINGS_CHANGED, 0),
        (REQUEST, 1),
        (BODY, 1),
        (BODY, 1),
        (WINDOW, 0),
        (WINDOW, 1),
        (TRAILERS, 1),
        (ENDED, 1),
        (REQUEST, 3),
        (ENDED, 3),
        (REQUEST, 5),
        (RESET, 5),
        (TERMINATED, 0),
    ]
    assert expected[1].headers[-1] == (b"x-long", b"v" * 40)
    assert (expected[3].data, expected[3].size) == (b"padded", 1 + 6 + 7)
    assert expected[-2].code == CANCEL
    for cut in range(1, len(wire)):
        client = Client()
        events = client.feed(wire[:cut]) + client.feed(wire[cut:])
        assert events == expected, cut
        assert client.out() == expected_out, cut
    client = Client()
    events = []
    for i in range(len(wire)):
        events += client.feed(wire[i : i + 1])
    assert events == expected
    assert client.out() == expected_out


# =================================================================== stream ids
@pytest.mark.parametrize("sid", [0, 2])
def test_headers_on_stream_0_or_an_even_stream(sid: int) -> None:
    client = started()
    client.fails(client.headers(sid), PROTOCOL_ERROR)


@pytest.mark.parametrize(
    "wire",
    [data(5, b"x"), data(5, b""), rst(5, CANCEL), window_update(5, 10)],
    ids=["DATA", "empty DATA", "RST_STREAM", "WINDOW_UPDATE"],
)
def test_frames_on_an_idle_stream_are_protocol_errors(wire: bytes) -> None:
    client = started()
    client.feed(client.headers(1, end=False))
    client.fails(wire, PROTOCOL_ERROR)


@pytest.mark.parametrize(
    "wire",
    [data(0, b"x"), rst(0, CANCEL), frame(PRIORITY, 0, 0, bytes(5))],
    ids=["DATA", "RST_STREAM", "PRIORITY"],
)
def test_stream_frames_on_stream_0_are_protocol_errors(wire: bytes) -> None:
    started().fails(wire, PROTOCOL_ERROR)


def test_push_promise_from_a_client_is_a_protocol_error() -> None:
    client = started()
    client.feed(client.headers(1, end=False))
    promised = (2).to_bytes(4, "big") + client.block("/pushed")
    client.fails(frame(PUSH_PROMISE, END_HEADERS, 1, promised), PROTOCOL_ERROR)


def test_a_priority_frame_may_name_an_idle_stream() -> None:
    client = started()
    assert client.feed(priority(11, 0)) == []
    assert client.out() == []
    # and the stream can still be opened afterwards (PRIORITY does not open it)
    assert kinds(client.feed(client.headers(1))) == [(REQUEST, 1), (ENDED, 1)]


def test_headers_reopening_a_lower_stream_id_is_a_protocol_error() -> None:
    """RFC 9113 §5.1.1: a new stream's id must be greater than every id the client used;
    "an endpoint that receives an unexpected stream identifier MUST respond with a
    connection error of type PROTOCOL_ERROR". Stream 1 was never opened and stream 3
    closed it implicitly: a HEADERS on it cannot start a request."""
    client = started()
    client.feed(client.headers(3))
    client.fails(client.headers(1), PROTOCOL_ERROR)


def test_data_on_an_even_stream_below_the_highest_is_a_protocol_error() -> None:
    """RFC 9113 §5.1: even ids are the server's, and this server opens none, so stream 2
    is idle even after the client opened stream 3: DATA on it is a PROTOCOL_ERROR
    (connection error), like any frame but HEADERS or PRIORITY on an idle stream."""
    client = started()
    client.feed(client.headers(3, end=False))
    client.fails(data(2, b"x"), PROTOCOL_ERROR)


# =================================================================== header blocks
def test_a_block_in_headers_and_continuations_is_one_request() -> None:
    client = started()
    block = client.block("/pieces", [("x-a", "1" * 100)])
    events = client.feed(
        frame(HEADERS, END_STREAM, 1, block[:1])
        + frame(CONTINUATION, 0, 1, block[1:50])
        + frame(CONTINUATION, 0, 1, b"")
        + frame(CONTINUATION, END_HEADERS, 1, block[50:])
    )
    assert kinds(events) == [(REQUEST, 1), (ENDED, 1)]
    assert dict(events[0].headers)[b":path"] == b"/pieces"
    assert events[0].ended


@pytest.mark.parametrize(
    "interloper",
    [
        ping(),
        data(1, b"x"),
        frame(HEADERS, END_HEADERS, 3, b"\x82"),
        frame(CONTINUATION, END_HEADERS, 3, b""),  # a CONTINUATION of another stream
        priority(1, 0),
        window_update(0, 5),
        settings(),
        rst(1, CANCEL),
        frame(0x42, 0, 1, b""),  # even an unknown frame
    ],
    ids=["PING", "DATA", "HEADERS", "CONTINUATION-3", "PRIORITY", "WINDOW_UPDATE",
         "SETTINGS", "RST_STREAM", "unknown"],
)  # fmt: skip
def test_a_frame_inside_a_header_block_is_a_protocol_error(interloper: bytes) -> None:
    client = started()
    block = client.block("/interleaved")
    client.feed(frame(HEADERS, END_STREAM, 1, block[:3]))
    client.fails(interloper, PROTOCOL_ERROR)


def test_continuation_without_a_block_is_a_protocol_error() -> None:
    client = started()
    client.fails(frame(CONTINUATION, END_HEADERS, 1, b"\x82"), PROTOCOL_ERROR)


def test_continuation_after_a_finished_block_is_a_protocol_error() -> None:
    client = started()
    client.feed(client.headers(1, end=False))
    client.fails(frame(CONTINUATION, END_HEADERS, 1, b"\x82"), PROTOCOL_ERROR)


@pytest.mark.parametrize(
    "block",
    [
        b"\x80",  # index 0
        b"\xbe",  # a dynamic index into an empty table (all-indexed: the memo path)
        b"\xff\xff\xff\xff\xff\xff\x7f",  # an index past anything
        b"\x00\x85abc",  # a literal name cut short
        b"\x82\x3f\xe1\x1f",  # a table size update after a field
        b"\x3f\xe1\xff\x7f",  # a table size update past the limit
    ],
)
def test_an_undecodable_block_is_a_compression_error(block: bytes) -> None:
    client = started()
    client.fails(frame(HEADERS, END_HEADERS | END_STREAM, 1, block), COMPRESSION_ERROR)


def test_a_block_decoding_past_the_header_list_limit_is_enhance_your_calm() -> None:
    """An HPACK bomb: one 4000-byte field in the dynamic table, then 200 one-byte
    references to it: a 4 kB block decoding to 800 kB."""
    client = started(max_header_list=16384)
    value = b"b" * 4000
    literal = b"\x40\x05x-big" + b"\x7f" + bytes(_int_tail(len(value) - 127)) + value
    block = b"\x82\x84\x87\x41\x01h" + literal + b"\xbe" * 200
    assert len(block) < 16384
    client.fails(frame(HEADERS, END_HEADERS | END_STREAM, 1, block), ENHANCE_YOUR_CALM)


def _int_tail(value: int) -> list[int]:
    """The continuation bytes of an HPACK integer (RFC 7541 §5.1) past its prefix."""
    out = []
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return out


def test_a_block_within_the_header_list_limit_decodes() -> None:
    client = started(max_header_list=16384)
    events = client.feed(client.headers(1, extra=[("x-big", "b" * 10000)]))
    assert kinds(events) == [(REQUEST, 1), (ENDED, 1)]


# =================================================================== padding
@pytest.mark.parametrize("kind", [DATA, HEADERS])
def test_padding_as_long_as_the_payload_is_a_protocol_error(kind: int) -> None:
    client = started()
    if kind == DATA:
        client.feed(client.headers(1, end=False))
    # payload: the pad length byte and 4 more; a pad of 5 leaves less than nothing
    payload = b"\x05" + b"\x82\x84\x87\x41"
    client.fails(frame(kind, PADDED | END_HEADERS, 1, payload), PROTOCOL_ERROR)


@pytest.mark.parametrize("kind", [DATA, HEADERS])
def test_a_padded_frame_without_its_pad_length(kind: int) -> None:
    client = started()
    if kind == DATA:
        client.feed(client.headers(1, end=False))
    client.fails(frame(kind, PADDED | END_HEADERS, 1, b""), FRAME_SIZE_ERROR)


def test_padding_of_all_but_the_length_byte_is_an_empty_body() -> None:
    client = started()
    client.feed(client.headers(1, end=False))
    events = client.feed(frame(DATA, PADDED | END_STREAM, 1, b"\x04" + b"\0" * 4))
    assert [(e.kind, e.data, e.size) for e in events] == [(BODY, b"", 5), (ENDED, b"", 0)]


def test_padded_data_counts_its_padding_against_both_windows() -> None:
    # stream window 1000 (ours), connection window 65535
    client = started(initial_window=1000)
    client.feed(client.headers(1, end=False))
    # 1 + 899 + 100 = 1000: the whole stream window, padding included
    events = client.feed(data(1, b"d" * 899, pad=100))
    assert [(e.kind, len(e.data), e.size) for e in events] == [(BODY, 899, 1000)]
    # one more byte of padding alone overflows it
    client.fails(data(1, b"", pad=0), FLOW_CONTROL_ERROR)


def test_padded_data_counts_against_the_connection_window() -> None:
    client = started(initial_window=1_000_000)
    client.feed(client.headers(1, end=False))
    # 4 frames of 16384 payload bytes, mostly padding: 65536 > 65535
    frame_of_padding = frame(DATA, PADDED, 1, b"\xff" + b"x" * 16128 + b"\0" * 255)
    events = client.feed(frame_of_padding * 3)
    assert [e.size for e in events] == [16384] * 3
    assert all(len(e.data) == 16128 for e in events)
    client.fails(frame_of_padding, FLOW_CONTROL_ERROR)


def test_padded_headers_decode() -> None:
    client = started()
    block = client.block("/padded")
    payload = b"\x03" + block + b"\0\0\0"
    events = client.feed(frame(HEADERS, PADDED | END_HEADERS | END_STREAM, 1, payload))
    assert kinds(events) == [(REQUEST, 1), (ENDED, 1)]
    assert dict(events[0].headers)[b":path"] == b"/padded"


# =================================================================== priority
def test_headers_with_the_priority_flag() -> None:
    client = started()
    block = client.block("/prioritised")
    payload = (0x80000000 | 0).to_bytes(4, "big") + b"\x10" + block  # exclusive on 0
    events = client.feed(frame(HEADERS, PRIORITY_FLAG | END_HEADERS | END_STREAM, 1, payload))
    assert kinds(events) == [(REQUEST, 1), (ENDED, 1)]
    assert dict(events[0].headers)[b":path"] == b"/prioritised"


def test_headers_with_priority_and_padding() -> None:
    client = started()
    block = client.block("/both")
    payload = b"\x02" + (3).to_bytes(4, "big") + b"\x10" + block + b"\0\0"
    flags = PADDED | PRIORITY_FLAG | END_HEADERS | END_STREAM
    events = client.feed(frame(HEADERS, flags, 1, payload))
    assert dict(events[0].headers)[b":path"] == b"/both"


def test_padding_eating_into_the_priority_fields_is_a_protocol_error() -> None:
    """RFC 9113 §6.2: "Padding that exceeds the size remaining for the field block
    fragment MUST be treated as a PROTOCOL_ERROR". Here 8 bytes: the pad length, the
    5 priority bytes, 2 bytes of block, and a pad length of 3 (more than the 2 left)."""
    client = started()
    payload = b"\x03" + bytes(5) + b"\x82\x84"
    flags = PADDED | PRIORITY_FLAG | END_HEADERS | END_STREAM
    client.fails(frame(HEADERS, flags, 1, payload), PROTOCOL_ERROR)


def test_headers_too_short_for_their_priority() -> None:
    client = started()
    client.fails(frame(HEADERS, PRIORITY_FLAG | END_HEADERS, 1, b"\0\0\0"), FRAME_SIZE_ERROR)


def test_self_dependent_headers_reset_the_stream_and_keep_hpack_in_step() -> None:
    client = started()
    # this block adds `x-new: first` to both dynamic tables
    block = client.block("/self", [("x-new", "first")])
    payload = (1).to_bytes(4, "big") + b"\x10" + block
    events = client.feed(frame(HEADERS, PRIORITY_FLAG | END_HEADERS | END_STREAM, 1, payload))
    assert events == []
    assert [(f.kind, f.sid, f.code) for f in client.out()] == [(RST_STREAM, 1, PROTOCOL_ERROR)]
    # the next block refers to that entry: it decodes only if the first one was decoded
    follow = client.block("/self", [("x-new", "first")])
    assert len(follow) < len(block)
    events = client.feed(frame(HEADERS, END_HEADERS | END_STREAM, 3, follow))
    assert kinds(events) == [(REQUEST, 3), (ENDED, 3)]
    assert (b"x-new", b"first") in events[0].headers


def test_a_self_dependent_priority_frame_resets_its_stream() -> None:
    client = started()
    client.feed(client.headers(1, end=False))
    events = client.feed(priority(1, 1))
    assert [(e.kind, e.sid, e.code) for e in events] == [(RESET, 1, PROTOCOL_ERROR)]
    assert [(f.kind, f.sid, f.code) for f in client.out()] == [(RST_STREAM, 1, PROTOCOL_ERROR)]
    # the connection goes on
    assert kinds(client.feed(client.headers(3))) == [(REQUEST, 3), (ENDED, 3)]


def test_a_priority_frame_of_a_wrong_size_resets_its_stream() -> None:
    client = started()
    client.feed(client.headers(1, end=False))
    events = client.feed(frame(PRIORITY, 0, 1, bytes(4)))
    assert [(e.kind, e.code) for e in events] == [(RESET, FRAME_SIZE_ERROR)]
    assert [(f.kind, f.sid, f.code) for f in client.out()] == [(RST_STREAM, 1, FRAME_SIZE_ERROR)]


# =================================================================== flow control in
def test_data_beyond_the_stream_window_is_a_flow_control_error() -> None:
    client = started(initial_window=1000)
    client.feed(client.headers(1, end=False))
    client.feed(data(1, b"x" * 600))
    client.fails(data(1, b"x" * 401), FLOW_CONTROL_ERROR)


def test_data_up_to_the_stream_window_is_fine_and_acknowledging_reopens_it() -> None:
    client = started(initial_window=1000)
    client.feed(client.headers(1, end=False))
    client.feed(data(1, b"x" * 1000))
    client.engine.acknowledge(1000, 1)
    # the stream's window is returned; the connection's is not owed half its size yet
    assert _updates(client.out()) == {1: 1000}
    assert [e.size for e in client.feed(data(1, b"x" * 1000))] == [1000]


def test_data_beyond_the_connection_window_is_a_flow_control_error() -> None:
    # each stream may send 100000, the connection only 65535
    client = started(initial_window=100000)
    client.feed(client.headers(1, end=False) + client.headers(3, end=False))
    client.feed(data(1, b"x" * 16384) * 2 + data(3, b"x" * 16384))
    client.feed(data(3, b"x" * 16383))  # 65535 in all
    client.fails(data(1, b"x"), FLOW_CONTROL_ERROR)


def test_window_update_overflowing_the_connection_window() -> None:
    client = started()
    assert kinds(client.feed(window_update(0, MAX_WINDOW - 65535))) == [(WINDOW, 0)]
    client.fails(window_update(0, 1), FLOW_CONTROL_ERROR)


def test_window_update_overflowing_a_stream_window_resets_it() -> None:
    client = started()
    client.feed(client.headers(1) + client.headers(3))
    events = client.feed(window_update(1, MAX_WINDOW - 65535 + 1))
    assert [(e.kind, e.sid, e.code) for e in events] == [(RESET, 1, FLOW_CONTROL_ERROR)]
    assert [(f.kind, f.sid, f.code) for f in client.out()] == [(RST_STREAM, 1, FLOW_CONTROL_ERROR)]
    assert client.engine.window(1) == -1
    # the neighbour and the connection go on
    assert kinds(client.feed(window_update(3, MAX_WINDOW - 65535))) == [(WINDOW, 3)]
    assert client.engine.window(3) == 65535  # the connection's window bounds it


def test_window_update_of_zero() -> None:
    client = started()
    client.feed(client.headers(1))
    events = client.feed(window_update(1, 0))
    assert [(e.kind, e.sid, e.code) for e in events] == [(RESET, 1, PROTOCOL_ERROR)]
    assert [(f.kind, f.sid, f.code) for f in client.out()] == [(RST_STREAM, 1, PROTOCOL_ERROR)]
    client.fails(window_update(0, 0), PROTOCOL_ERROR)


def test_window_update_of_a_wrong_size() -> None:
    client = started()
    client.fails(frame(WINDOW_UPDATE, 0, 0, b"\0\0\1"), FRAME_SIZE_ERROR)


def test_window_update_ignores_the_reserved_bit() -> None:
    client = started()
    client.feed(client.headers(1))
    client.feed(window_update(0, 0x80000000 | 100))
    client.feed(window_update(1, 0x80000000 | 100))
    assert client.engine.window(1) == 65635


# =================================================================== flow control out
def test_initial_window_size_changes_adjust_open_streams_even_below_zero() -> None:
    client = started()
    client.feed(client.headers(1) + client.headers(3))
    client.feed(window_update(0, 1_000_000))
    assert client.engine.send_headers(1, [(b":status", b"200")], False)
    assert client.engine.send_data(1, b"x" * 1000, False)
    assert client.engine.window(1) == 64535
    # the client shrinks its windows: stream 1 owes 500 bytes (RFC 9113 §6.9.2)
    events = client.feed(settings((INITIAL_WINDOW_SIZE, 500)))
    assert kinds(events) == [(SETTINGS_CHANGED, 0)]
    # in debt: nothing may be sent, yet the stream is open (not the -1 of a closed one)
    assert client.engine.window(1) == 0
    assert client.engine.window(3) == 500
    client.feed(window_update(1, 600))
    assert client.engine.window(1) == 100
    # a new stream starts with the new initial window
    client.feed(client.headers(5))
    assert client.engine.window(5) == 500
    # growing it again: every open stream gains the difference
    client.feed(settings((INITIAL_WINDOW_SIZE, 70000)))
    assert [client.engine.window(s) for s in (1, 3, 5)] == [69600, 70000, 70000]


def test_initial_window_size_overflowing_a_stream_window() -> None:
    client = started()
    client.feed(client.headers(1))
    client.feed(window_update(1, MAX_WINDOW - 65535))
    client.fails(settings((INITIAL_WINDOW_SIZE, 65536)), FLOW_CONTROL_ERROR)


def test_initial_window_size_past_the_maximum() -> None:
    started().fails(settings((INITIAL_WINDOW_SIZE, MAX_WINDOW + 1)), FLOW_CONTROL_ERROR)


# =================================================================== acknowledge
def _updates(out: list[Out]) -> dict[int, int]:
    updates: dict[int, int] = {}
    for f in out:
        if f.kind == WINDOW_UPDATE:
            updates[f.sid] = updates.get(f.sid, 0) + f.increment
    return updates


def test_acknowledge_batches_window_updates() -> None:
    client = started()
    client.feed(client.headers(1, end=False))
    client.feed(data(1, b"x" * 100))
    client.engine.acknowledge(100, 1)
    assert client.out() == []  # plenty of window left: no frame for 100 bytes
    client.feed(data(1, b"x" * 16384) * 2)
    client.engine.acknowledge(32767 - 100 - 1, 1)
    assert client.out() == []  # one byte short of half the window
    client.engine.acknowledge(1, 1)
    assert _updates(client.out()) == {0: 32767, 1: 32767}
    client.engine.acknowledge(1, 1)
    assert client.out() == []


def test_acknowledge_answers_at_once_when_the_window_is_nearly_shut() -> None:
    client = started()
    client.feed(client.headers(1, end=False))
    client.feed(data(1, b"x" * 16384) * 3 + data(1, b"x" * 16383))  # 65535: shut
    client.engine.acknowledge(10, 1)
    assert _updates(client.out()) == {0: 10, 1: 10}


def test_acknowledge_never_reopens_past_the_window_credited_ahead() -> None:
    client = started()
    client.feed(client.headers(1, end=False))
    client.feed(data(1, b"x" * 16384) * 3)
    # the gateway holds these bytes for a waiting stream: credited to the connection now
    client.engine.open_connection_window(49152, 1)
    assert _updates(client.out()) == {0: 49152}
    # passed on later: the stream's window reopens, the connection's is already open
    client.engine.acknowledge(49152, 1)
    assert _updates(client.out()) == {1: 49152}


def test_acknowledge_does_not_credit_bytes_credited_ahead_twice() -> None:
    """Bytes credited ahead for a stream with `open_connection_window` are not credited
    again when that stream acknowledges them. While other bytes are still held (received,
    not acknowledged), a cap "never past the window's size" alone would not hold that
    promise: the ahead bytes, acknowledged, would pay for the held ones again, and the
    client could send more than a connection window while the gateway holds bytes it never
    returned."""
    client = started()
    client.feed(client.headers(1, end=False) + client.headers(3, end=False))
    client.feed(client.headers(5, end=False))
    received = 0

    def send(sid: int, size: int) -> None:
        nonlocal received
        while size:
            piece = min(size, 16384)
            client.feed(data(sid, b"x" * piece))
            size -= piece
            received += piece

    send(1, 20000)  # stream 1 waits: its bytes are credited to the connection at once
    client.engine.open_connection_window(20000, 1)
    client.engine.acknowledge(20000, 1)  # ... and passed on once it is dispatched
    send(3, 30000)  # stream 3's upstream is slow: its bytes stay held, unacknowledged
    send(5, 13000)  # stream 5's are passed on
    client.engine.acknowledge(13000, 5)
    credited = _updates(client.out()).get(0, 0)
    client_window = 65535 - received + credited
    held = 30000  # received, neither acknowledged nor credited ahead
    assert client_window + held <= 65535, (
        f"the client may send {client_window} more bytes while {held} are held"
    )


def test_acknowledge_keeps_the_windows_bounded_and_returns_what_was_owed() -> None:
    """Random traffic on 5 streams with random acknowledgements (nothing credited
    ahead): the client's windows never open past their size, counting what the gateway
    still holds, and once everything is acknowledged less than half a window is owed."""
    rng = random.Random(9113)
    window = 65535
    client = started(initial_window=window)
    sids = [1, 3, 5, 7, 9]
    for sid in sids:
        client.feed(client.headers(sid, end=False))
    conn_window = window
    stream_window = dict.fromkeys(sids, window)
    held = dict.fromkeys(sids, 0)

    def take_output() -> None:
        nonlocal conn_window
        for sid, increment in _updates(client.out()).items():
            if sid == 0:
                conn_window += increment
            else:
                stream_window[sid] += increment

    for _ in range(3000):
        sid = rng.choice(sids)
        if rng.random() < 0.6:
            size = min(rng.randint(0, 16384), conn_window, stream_window[sid])
            if size:
                client.feed(data(sid, b"y" * size))
                conn_window -= size
                stream_window[sid] -= size
                held[sid] += size
        elif held[sid]:
            size = rng.randint(1, held[sid])
            client.engine.acknowledge(size, sid)
            held[sid] -= size
        take_output()
        assert conn_window + sum(held.values()) <= window
        assert all(stream_window[s] + held[s] <= window for s in sids)
    for sid in sids:
        if held[sid]:
            client.engine.acknowledge(held[sid], sid)
            held[sid] = 0
    take_output()
    assert window // 2 <= conn_window <= window
    assert all(window // 2 <= stream_window[s] <= window for s in sids)


# =================================================================== SETTINGS
@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (frame(SETTINGS, 0, 0, bytes(7)), FRAME_SIZE_ERROR),
        (frame(SETTINGS, ACK, 0, bytes(6)), FRAME_SIZE_ERROR),
        (settings((ENABLE_PUSH, 2)), PROTOCOL_ERROR),
        (settings((ENABLE_CONNECT_PROTOCOL, 2)), PROTOCOL_ERROR),
        (settings((MAX_FRAME_SIZE, 16383)), PROTOCOL_ERROR),
        (settings((MAX_FRAME_SIZE, 2**24)), PROTOCOL_ERROR),
        (settings((INITIAL_WINDOW_SIZE, 2**31)), FLOW_CONTROL_ERROR),
        (frame(SETTINGS, 0, 3, b""), PROTOCOL_ERROR),
    ],
    ids=["length", "ACK-payload", "ENABLE_PUSH", "CONNECT_PROTOCOL", "MAX_FRAME-low",
         "MAX_FRAME-high", "INITIAL_WINDOW", "on-a-stream"],
)  # fmt: skip
def test_bad_settings(wire: bytes, code: int) -> None:
    started().fails(wire, code)


def test_settings_are_acknowledged_and_unknown_ids_ignored() -> None:
    client = started()
    events = client.feed(
        settings(
            (ENABLE_PUSH, 0),
            (MAX_FRAME_SIZE, 2**24 - 1),
            (0x99, 12345),
            (MAX_CONCURRENT_STREAMS, 1),
        )
    )
    assert kinds(events) == [(SETTINGS_CHANGED, 0)]
    assert [(f.kind, f.flags, f.payload) for f in client.out()] == [(SETTINGS, ACK, b"")]
    assert client.engine.max_frame == 2**24 - 1
    # the client's ACK of ours is taken quietly
    assert client.feed(frame(SETTINGS, ACK)) == []
    assert client.out() == []


def test_a_header_table_size_setting_reaches_the_next_block() -> None:
    client = started()
    client.feed(settings((HEADER_TABLE_SIZE, 0)) + client.headers(1))
    client.out()
    assert client.engine.send_headers(1, [(b":status", b"200")], True)
    (head,) = client.out()
    assert client.decoder.decode(head.payload, raw=True) == [(b":status", b"200")]
    assert client.decoder.header_table_size == 0


# =================================================================== PING, GOAWAY, unknown
def test_ping_is_answered_with_its_payload() -> None:
    client = started()
    assert client.feed(ping(b"\x00\xffopaque")) == []
    assert [(f.kind, f.flags, f.sid, f.payload) for f in client.out()] == [
        (PING, ACK, 0, b"\x00\xffopaque")
    ]


def test_a_ping_ack_is_not_answered() -> None:
    client = started()
    assert client.feed(ping(b"answered", ack=True)) == []
    assert client.out() == []


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (frame(PING, 0, 0, bytes(7)), FRAME_SIZE_ERROR),
        (frame(PING, 0, 0, bytes(9)), FRAME_SIZE_ERROR),
        (frame(PING, 0, 1, bytes(8)), PROTOCOL_ERROR),
    ],
)
def test_bad_pings(wire: bytes, code: int) -> None:
    started().fails(wire, code)


def test_goaway_from_the_client_terminates() -> None:
    client = started()
    client.feed(client.headers(1))
    events = client.feed(goaway(1, ENHANCE_YOUR_CALM, b"debug data"))
    assert [(e.kind, e.code) for e in events] == [(TERMINATED, ENHANCE_YOUR_CALM)]


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (frame(GOAWAY, 0, 0, bytes(7)), FRAME_SIZE_ERROR),
        (frame(GOAWAY, 0, 1, bytes(8)), PROTOCOL_ERROR),
    ],
)
def test_bad_goaways(wire: bytes, code: int) -> None:
    started().fails(wire, code)


def test_rst_stream_of_a_wrong_size() -> None:
    client = started()
    client.feed(client.headers(1, end=False))
    client.fails(frame(RST_STREAM, 0, 1, bytes(5)), FRAME_SIZE_ERROR)


def test_unknown_frame_types_are_ignored() -> None:
    client = started()
    client.feed(client.headers(1, end=False))
    for wire in (
        frame(0x0A, 0xFF, 0, b"x" * 100),
        frame(0xFF, 0, 1, b""),
        frame(0x42, 0, 99, b"z"),
    ):
        assert client.feed(wire) == []
    assert client.out() == []
    # the unknown frame on stream 99 did not open it, nor make stream 5 too low
    assert kinds(client.feed(client.headers(5))) == [(REQUEST, 5), (ENDED, 5)]


# =================================================================== the stream limit
def test_streams_past_the_limit_are_refused_and_the_connection_goes_on() -> None:
    client = started(max_streams=2)
    client.feed(client.headers(1) + client.headers(3))
    client.out()
    # stream 5 adds a dynamic table entry that stream 7's block refers to
    events = client.feed(client.headers(5, "/refused", extra=[("x-kept", "in step")]))
    assert [(e.kind, e.sid) for e in events] == [(REFUSED, 5)]
    assert [(f.kind, f.sid, f.code) for f in client.out()] == [(RST_STREAM, 5, REFUSED_STREAM)]
    # its DATA in flight is dropped, its bytes returned to the connection in time
    assert client.feed(data(5, b"x" * 16384) * 2) == []
    assert _updates(client.out()) == {0: 32768}
    # a finished stream frees its place
    client.engine.send_headers(1, [(b":status", b"204")], True)
    client.out()
    events = client.feed(client.headers(7, "/refused", extra=[("x-kept", "in step")]))
    assert kinds(events) == [(REQUEST, 7), (ENDED, 7)]
    assert (b"x-kept", b"in step") in events[0].headers


# =================================================================== trailers, closing
def test_trailers_after_data_end_the_stream() -> None:
    client = started()
    events = client.feed(client.headers(1, end=False) + data(1, b"body") + client.trailers(1))
    assert kinds(events) == [(REQUEST, 1), (BODY, 1), (TRAILERS, 1), (ENDED, 1)]
    assert events[2].headers == [(b"x-trailer", b"t")]
    assert not events[0].ended


def test_a_second_block_without_end_stream_resets_the_stream() -> None:
    client = started()
    client.feed(client.headers(1, end=False) + data(1, b"body"))
    events = client.feed(client.trailers(1, end=False))
    assert [(e.kind, e.sid, e.code) for e in events] == [(RESET, 1, PROTOCOL_ERROR)]
    assert [(f.kind, f.sid, f.code) for f in client.out()] == [(RST_STREAM, 1, PROTOCOL_ERROR)]


@pytest.mark.parametrize("late", ["data", "trailers"])
def test_frames_after_the_clients_end_stream_are_stream_closed(late: str) -> None:
    client = started()
    client.feed(client.headers(1, end=True) + client.headers(3, end=False))
    wire = data(1, b"x" * 1000) if late == "data" else client.trailers(1)
    events = client.feed(wire)
    assert [(e.kind, e.sid, e.code) for e in events] == [(RESET, 1, STREAM_CLOSED)]
    assert [(f.kind, f.sid, f.code) for f in client.out()] == [(RST_STREAM, 1, STREAM_CLOSED)]
    assert client.engine.window(1) == -1
    assert kinds(client.feed(data(3, b"ok"))) == [(BODY, 3)]


def test_frames_on_a_stream_we_reset_are_ignored_but_their_data_is_counted() -> None:
    client = started(initial_window=1_000_000)
    client.feed(client.headers(1, end=False))
    client.engine.reset_stream(1, CANCEL)
    assert [(f.kind, f.sid, f.code) for f in client.out()] == [(RST_STREAM, 1, CANCEL)]
    # crossed in flight: DATA, trailers, WINDOW_UPDATE, PRIORITY, its own RST_STREAM
    quiet = (
        data(1, b"x" * 1000)
        + client.trailers(1)
        + window_update(1, 100)
        + priority(1, 0)
        + rst(1, CANCEL)
    )
    assert client.feed(quiet) == []
    assert client.out() == []
    # ... and its DATA takes connection window, returned in batches (never the stream's)
    client.feed(data(1, b"x" * 16384) * 2)
    assert _updates(client.out()) == {0: 33768}
    # its trailers were decoded: the next block's references still work
    events = client.feed(frame(HEADERS, END_HEADERS | END_STREAM, 3, client.block("/after")))
    assert kinds(events) == [(REQUEST, 3), (ENDED, 3)]


def test_data_on_a_reset_stream_still_cannot_overflow_the_connection_window() -> None:
    client = started(initial_window=1_000_000)
    client.feed(client.headers(1, end=False) + client.headers(3, end=False))
    client.engine.reset_stream(1, CANCEL)
    client.feed(data(3, b"x" * 16384) * 3)  # held by stream 3, not acknowledged
    # 16383 more fit; stream 1's bytes are acknowledged as they come, but only in
    # batches: a frame past what is open is still an error
    client.fails(data(1, b"x" * 16384), FLOW_CONTROL_ERROR)


def test_a_client_reset_is_an_event_and_forgets_the_stream() -> None:
    client = started()
    client.feed(client.headers(1, end=False))
    events = client.feed(rst(1, CANCEL))
    assert [(e.kind, e.sid, e.code) for e in events] == [(RESET, 1, CANCEL)]
    assert client.engine.window(1) == -1
    assert not client.engine.send_headers(1, [(b":status", b"200")], True)
    assert client.out() == []


# =================================================================== the send side
def test_send_headers_splits_a_large_block_into_continuations() -> None:
    client = started()
    client.feed(client.headers(1))
    fields = [(b":status", b"200"), (b"x-large", b"L" * 40000)]
    assert client.engine.send_headers(1, fields, True)
    frames = client.out()
    assert [(f.kind, f.flags, f.sid, len(f.payload)) for f in frames][:2] == [
        (HEADERS, END_STREAM, 1, 16384),
        (CONTINUATION, 0, 1, 16384),
    ]
    assert (frames[-1].kind, frames[-1].flags) == (CONTINUATION, END_HEADERS)
    assert len(frames) == 3
    block = b"".join(f.payload for f in frames)
    assert client.decoder.decode(block, raw=True) == fields


def test_send_headers_follows_the_peers_max_frame_size() -> None:
    client = started()
    client.feed(settings((MAX_FRAME_SIZE, 65536)) + client.headers(1))
    client.out()
    client.engine.send_headers(1, [(b":status", b"200"), (b"x-large", b"L" * 40000)], False)
    assert [(f.kind, f.flags) for f in client.out()] == [(HEADERS, END_HEADERS)]


def test_send_data_after_the_end_is_refused() -> None:
    client = started()
    client.feed(client.headers(1, end=False))
    assert client.engine.send_headers(1, [(b":status", b"200")], False)
    assert client.engine.send_data(1, b"last", True)
    out = client.out()
    assert [(f.kind, f.flags, f.payload) for f in out][-1] == (DATA, END_STREAM, b"last")
    assert not client.engine.send_data(1, b"more", False)
    assert not client.engine.send_headers(1, [(b"x-trailer", b"1")], True)
    assert client.engine.window(1) == -1
    assert client.out() == []
    # the client's half is still open: its DATA still arrives
    assert kinds(client.feed(data(1, b"x", end=True))) == [(BODY, 1), (ENDED, 1)]


def test_window_is_minus_one_for_streams_that_are_not_open() -> None:
    client = started()
    assert client.engine.window(1) == -1  # idle
    client.feed(client.headers(1))
    assert client.engine.window(1) == 65535
    client.engine.reset_stream(1, CANCEL)
    assert client.engine.window(1) == -1


def test_window_is_bounded_by_the_connection() -> None:
    client = started()
    client.feed(client.headers(1) + client.headers(3) + window_update(1, 100000))
    client.engine.send_headers(3, [(b":status", b"200")], False)
    client.engine.send_data(3, b"x" * 60000, False)
    assert client.engine.window(1) == 5535
    client.feed(window_update(0, 100))
    assert client.engine.window(1) == 5635


def test_a_stream_is_forgotten_once_both_halves_are_done() -> None:
    client = started(max_streams=1)
    client.feed(client.headers(1, end=False))
    client.engine.send_headers(1, [(b":status", b"200")], True)
    assert client.engine.streams  # the client's half is still open
    client.feed(data(1, b"", end=True))
    assert not client.engine.streams
    # its place is free again
    assert kinds(client.feed(client.headers(3))) == [(REQUEST, 3), (ENDED, 3)]
    client.engine.send_headers(3, [(b":status", b"200")], False)
    client.engine.send_data(3, b"", True)
    assert not client.engine.streams


def test_reset_stream_of_a_closed_stream_sends_nothing() -> None:
    client = started()
    client.feed(client.headers(1))
    client.engine.send_headers(1, [(b":status", b"204")], True)
    client.out()
    client.engine.reset_stream(1, CANCEL)
    client.engine.reset_stream(99, CANCEL)
    assert client.out() == []


def test_close_connection_names_the_highest_stream() -> None:
    client = started()
    client.feed(client.headers(1) + client.headers(7))
    client.engine.close_connection(ENHANCE_YOUR_CALM)
    (last,) = client.out()
    assert (last.kind, last.sid, last.code) == (GOAWAY, 0, ENHANCE_YOUR_CALM)
    assert int.from_bytes(last.payload[:4], "big") == 7
