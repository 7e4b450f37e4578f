"""HTTP/2 client streams (the preface, SETTINGS, HEADERS and DATA frames made by the `h2`
library as a client) cut at random byte boundaries answer exactly as when they arrive in
one piece: the same responses per stream, as many, the same GOAWAY, nothing logged as an
error. Malformed streams get the same stream reset, refusal or GOAWAY wherever they are cut.

Through the in-process harness (tests/protocolkit.py); as in the HTTP/1.1 tests, requests with
a body go to the `proxy:` route and conftest's backend, the others answer in-process."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from h2.errors import ErrorCodes
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Backend
from protocolkit import SPLIT_FILE_BODY, H2Client, InProcessGateway, Outcome, run_h2, split_site

BOUNDED = settings(max_examples=60, deadline=None, derandomize=True, database=None)
FILE_BODY = SPLIT_FILE_BODY
# past the client's 64 KiB stream window: the file moves only as the client acknowledges it
BIG_BODY = bytes(range(256)) * 1024
PROTOCOL_ERROR = int(ErrorCodes.PROTOCOL_ERROR)


@pytest.fixture
def harness(
    backend: Backend, tmp_path: Path, in_process: Callable[..., InProcessGateway]
) -> InProcessGateway:
    return in_process(split_site(backend.url, tmp_path / "www", {"big.bin": BIG_BODY}))


@dataclass(frozen=True)
class Req:
    """One request on its own stream and what its answer must be."""

    method: str
    path: str
    status: int
    body: bytes | None = None  # the exact answer body, when known
    upload: tuple[bytes, ...] | None = None  # DATA frames sent (to /echo/)
    with_length: bool = True  # the upload declares its content-length

    def queue(self, client: H2Client) -> int:
        if self.upload is None:
            return client.request(self.method, self.path)
        if self.with_length:
            headers = [("content-length", str(sum(len(f) for f in self.upload)))]
        else:
            headers = []
        return client.request(self.method, self.path, headers, data_frames=self.upload)


FIXED = [
    Req("GET", "/hello", 200, b"hello"),
    Req("HEAD", "/hello", 200, b""),
    Req("GET", "/missing", 404),
    Req("DELETE", "/only-get", 405),
    Req("GET", "/old/x?q=1", 308, b""),
    Req("GET", "/files/a.txt", 200, FILE_BODY),
    Req("GET", "/files/big.bin", 200, BIG_BODY),
    Req("GET", "/echo/q?x=1", 200),
]


@st.composite
def requests(draw: st.DrawFn) -> Req:
    if draw(st.booleans()):
        return draw(st.sampled_from(FIXED))
    frames = draw(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=3))
    return Req("POST", "/echo/up", 200, upload=tuple(frames), with_length=draw(st.booleans()))


def client_of(reqs: list[Req]) -> Callable[[], tuple[H2Client, list[int]]]:
    def make() -> tuple[H2Client, list[int]]:
        client = H2Client()
        return client, [req.queue(client) for req in reqs]

    return make


def check_answers(outcome: Outcome, reqs: list[Req]) -> None:
    assert outcome.errors == []
    assert outcome.goaway is None
    assert not outcome.closed
    assert outcome.statuses == [r.status for r in reqs]
    for req, resp in zip(reqs, outcome.responses, strict=True):
        assert resp.complete and resp.reset is None
        if req.body is not None:
            assert resp.body == req.body
        if req.upload is not None:
            assert json.loads(resp.body)["body_len"] == sum(len(f) for f in req.upload)
        if req.status == 405:
            assert resp.header("allow") == "GET, HEAD"
        if req.status == 308:
            assert resp.header("location") == "/new/x?q=1"


def stream_length(make: Callable[[], tuple[H2Client, list[int]]]) -> int:
    return len(make()[0].to_send())


def test_streams_cut_anywhere_answer_as_whole(harness: InProcessGateway) -> None:
    @BOUNDED
    @given(reqs=st.lists(requests(), min_size=1, max_size=5), data=st.data())
    def check(reqs: list[Req], data: st.DataObject) -> None:
        make = client_of(reqs)
        size = stream_length(make)
        cuts = data.draw(st.lists(st.integers(1, size - 1), max_size=12), label="cuts")
        whole = run_h2(harness, make)
        check_answers(whole, reqs)
        pieces = run_h2(harness, make, cuts)
        assert pieces.normalised() == whole.normalised()

    check()


def test_every_byte_apart_answers_as_whole(harness: InProcessGateway) -> None:
    reqs = [*FIXED, Req("POST", "/echo/u", 200, upload=(b"ab", b"c"), with_length=False)]
    make = client_of(reqs)
    whole = run_h2(harness, make)
    check_answers(whole, reqs)
    one_by_one = run_h2(harness, make, range(stream_length(make)))
    assert one_by_one.normalised() == whole.normalised()


def malformed(
    *fields: tuple[str, str], body: tuple[bytes, ...] = (), end: bool = True
) -> Callable[[H2Client], int]:
    """A request sent as given, without h2's checks: fields in this order, then the DATA
    frames of `body`; the last frame ends the stream when `end`."""

    def queue(client: H2Client) -> int:
        sid: int = client.h2.get_next_available_stream_id()
        encoded = [(k.encode(), v.encode()) for k, v in fields]
        client.h2.send_headers(sid, encoded, end_stream=end and not body)
        for i, frame in enumerate(body):
            client.h2.send_data(sid, frame, end_stream=end and i == len(body) - 1)
        return sid

    return queue


def pseudo(path: str = "/hello", method: str = "GET") -> list[tuple[str, str]]:
    return [(":method", method), (":scheme", "https"), (":authority", "localhost"), (":path", path)]


# A valid stream first, then the malformed one: (how it is queued, its status, or 0 when the
# stream is reset before an answer, and the RST_STREAM code it gets, None for none).
STREAM_ERRORS = {
    "upper-case field name": (malformed(*pseudo(), ("X-Upper", "1")), 0, PROTOCOL_ERROR),
    "pseudo-field after a field": (
        malformed(*pseudo()[:3], ("x-a", "1"), pseudo()[3]),
        0,
        PROTOCOL_ERROR,
    ),
    "no :path": (malformed(*pseudo()[:3]), 0, PROTOCOL_ERROR),
    "connection-specific field": (
        malformed(*pseudo(), ("connection", "keep-alive")),
        0,
        PROTOCOL_ERROR,
    ),
    "control byte in the path": (malformed(*pseudo("/he\x01llo")), 0, PROTOCOL_ERROR),
    "declared body too large": (
        malformed(*pseudo("/echo/x", "POST"), ("content-length", "5000"), end=False),
        413,
        0,  # NO_ERROR: answered before its body, the client is asked to stop sending it
    ),
    "body too large": (
        malformed(*pseudo("/echo/x", "POST"), body=(b"y" * 3000, b"y" * 3000)),
        413,
        None,
    ),
}


@pytest.mark.parametrize("name", list(STREAM_ERRORS))
def test_malformed_stream_cut_anywhere_same_refusal(
    harness: InProcessGateway, backend: Backend, name: str
) -> None:
    queue_bad, status, reset = STREAM_ERRORS[name]

    def make() -> tuple[H2Client, list[int]]:
        client = H2Client(validate=False)
        return client, [client.request("GET", "/hello"), queue_bad(client)]

    whole = run_h2(harness, make)
    assert whole.errors == []
    assert whole.goaway is None
    first, bad = whole.responses
    assert (first.status, first.body) == (200, b"hello")
    assert (bad.status, bad.reset) == (status, reset)
    if status:
        assert bad.header("content-type") == "application/problem+json"

    @BOUNDED
    @given(cuts=st.lists(st.integers(1, stream_length(make) - 1), max_size=10))
    def check(cuts: list[int]) -> None:
        assert run_h2(harness, make, cuts).normalised() == whole.normalised()

    check()
    assert [r for r in backend.requests if r["method"] == "POST"] == []


def test_garbage_frame_cut_anywhere_same_goaway(harness: InProcessGateway) -> None:
    # a DATA frame on stream 0 (a connection error): RFC 9113 §6.1
    garbage = b"\x00\x00\x03\x00\x00\x00\x00\x00\x00abc"

    def make_with_garbage() -> tuple[H2Client, list[int]]:
        client = H2Client()
        client.raw(garbage)  # right after the preface and SETTINGS
        return client, [client.request("GET", "/hello")]

    whole = run_h2(harness, make_with_garbage)
    assert whole.errors == []
    assert whole.goaway == PROTOCOL_ERROR
    assert whole.closed

    @BOUNDED
    @given(cuts=st.lists(st.integers(1, stream_length(make_with_garbage) - 1), max_size=10))
    def check(cuts: list[int]) -> None:
        assert run_h2(harness, make_with_garbage, cuts).normalised() == whole.normalised()

    check()
