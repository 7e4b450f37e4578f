"""HTTP/1.1 request streams cut at random byte boundaries answer exactly as when they
arrive in one piece: the same responses (status lines, fields, bodies), as many of them, the
same close, and nothing logged as an error. Malformed streams get the same 4xx and close
wherever they are cut.

Through the in-process harness (tests/protocolkit.py): the routes that answer in-process take
no body (one answered before its body arrives closes the connection, by design, so a body
would make the answer depend on the cut); requests with bodies go to the `proxy:` route and
the real backend of conftest."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Backend
from protocolkit import (
    SPLIT_FILE_BODY,
    InProcessGateway,
    Outcome,
    h1_request,
    run_h1,
    split,
    split_site,
)

BOUNDED = settings(max_examples=60, deadline=None, derandomize=True, database=None)
FILE_BODY = SPLIT_FILE_BODY


@pytest.fixture
def harness(
    backend: Backend, tmp_path: Path, in_process: Callable[..., InProcessGateway]
) -> InProcessGateway:
    return in_process(split_site(backend.url, tmp_path / "www"))


@dataclass(frozen=True)
class Req:
    """One request of a pipeline and what its answer must be."""

    data: bytes
    method: str
    status: int
    body: bytes | None = None  # the exact answer body, when known
    body_len: int | None = None  # for /echo/: the body length the backend must report


def fixed_requests() -> list[Req]:
    return [
        Req(h1_request("GET", "/hello"), "GET", 200, b"hello"),
        Req(h1_request("HEAD", "/hello"), "HEAD", 200, b""),
        Req(h1_request("GET", "/missing"), "GET", 404),
        Req(h1_request("DELETE", "/only-get"), "DELETE", 405),
        Req(h1_request("GET", "/old/x?q=1"), "GET", 308, b""),
        Req(h1_request("GET", "/files/a.txt"), "GET", 200, FILE_BODY),
        Req(h1_request("GET", "/echo/q?x=1"), "GET", 200, body_len=0),
    ]


@st.composite
def requests(draw: st.DrawFn) -> Req:
    kind = draw(st.sampled_from(["fixed", "length", "chunked"]))
    if kind == "fixed":
        return draw(st.sampled_from(fixed_requests()))
    # bodies up to the body limit, past the head limits (a read may end one request's body
    # and start the next one's head: see test_large_body_then_head_in_one_read)
    if kind == "length":
        body = draw(st.binary(max_size=4000))
        return Req(h1_request("POST", "/echo/up", body=body), "POST", 200, body_len=len(body))
    chunks = draw(st.lists(st.binary(min_size=1, max_size=120), max_size=4))
    total = sum(len(c) for c in chunks)
    return Req(h1_request("PUT", "/echo/up", chunks=chunks), "PUT", 200, body_len=total)


def pipeline_bytes(reqs: list[Req], close: bool) -> bytes:
    data = b"".join(r.data for r in reqs)
    if close:
        # the last request asks to close: insert the field into its head
        last = reqs[-1].data
        head_end = last.index(b"\r\n") + 2
        data = data[: len(data) - len(last)] + last[:head_end] + b"Connection: close\r\n"
        data += last[head_end:]
    return data


def check_answers(outcome: Outcome, reqs: list[Req], close: bool) -> None:
    assert outcome.errors == []
    assert outcome.statuses == [r.status for r in reqs]
    assert outcome.closed == close
    for req, resp in zip(reqs, outcome.responses, strict=True):
        assert resp.complete
        if req.body is not None:
            assert resp.body == req.body
        if req.body_len is not None:
            assert json.loads(resp.body)["body_len"] == req.body_len
        if req.status == 405:
            assert resp.header("allow") == "GET, HEAD"
        if req.status == 308:
            assert resp.header("location") == "/new/x?q=1"


def test_pipelines_cut_anywhere_answer_as_whole(harness: InProcessGateway) -> None:
    @BOUNDED
    @given(
        reqs=st.lists(requests(), min_size=1, max_size=4),
        close=st.booleans(),
        data=st.data(),
    )
    def check(reqs: list[Req], close: bool, data: st.DataObject) -> None:
        stream = pipeline_bytes(reqs, close)
        methods = [r.method for r in reqs]
        cuts = data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=12), label="cuts")
        whole = run_h1(harness, [stream], methods, len(reqs))
        check_answers(whole, reqs, close)
        pieces = run_h1(harness, split(stream, cuts), methods, len(reqs))
        assert pieces.normalised() == whole.normalised()

    check()


def test_every_byte_apart_answers_as_whole(harness: InProcessGateway) -> None:
    reqs = [
        *fixed_requests(),
        Req(h1_request("PUT", "/echo/u", chunks=[b"ab", b"c"]), "PUT", 200, body_len=3),
    ]
    stream = pipeline_bytes(reqs, close=True)
    methods = [r.method for r in reqs]
    whole = run_h1(harness, [stream], methods, len(reqs))
    check_answers(whole, reqs, close=True)
    one_by_one = run_h1(harness, split(stream, range(len(stream))), methods, len(reqs))
    assert one_by_one.normalised() == whole.normalised()


def test_half_close_after_the_requests_still_answered(harness: InProcessGateway) -> None:
    """A client may send its requests, half-close, and still read every answer."""
    reqs = [
        Req(h1_request("GET", "/hello"), "GET", 200, b"hello"),
        Req(h1_request("POST", "/echo/up", body=b"abc"), "POST", 200, body_len=3),
    ]
    stream = pipeline_bytes(reqs, close=False)
    methods = [r.method for r in reqs]

    @BOUNDED
    @given(cuts=st.lists(st.integers(1, len(stream) - 1), max_size=8))
    def check(cuts: list[int]) -> None:
        outcome = run_h1(harness, split(stream, cuts), methods, len(reqs), eof=True)
        check_answers(outcome, reqs, close=True)  # closed once the last answer is out

    check()


def test_large_body_then_head_in_one_read(harness: InProcessGateway) -> None:
    # the body is over max_header_bytes + max_uri_bytes (3072) but under max_body_bytes
    first = h1_request("POST", "/echo/up", body=b"x" * 3500)
    stream = first + h1_request("GET", "/hello")
    cut = len(first) + 10  # the next request line has begun
    outcome = run_h1(harness, [stream[:cut], stream[cut:]], ["POST", "GET"], 2)
    assert outcome.statuses == [200, 200]
    assert outcome.normalised() == run_h1(harness, [stream], ["POST", "GET"], 2).normalised()


# A valid request first, then one that is refused: the first is answered, the second gets
# its 4xx and the connection closes, wherever the bytes are cut.
MALFORMED = {
    "bad chunk size": (h1_request("POST", "/echo/x", chunks=[]).replace(b"0\r\n", b"zz\r\n"), 400),
    "space in a field name": (b"GET /hello HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 400),
    "two Host fields": (b"GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "length and chunked": (
        b"POST /echo/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    "unknown coding": (
        b"POST /echo/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        501,
    ),
    "HTTP/3.0": (b"GET /hello HTTP/3.0\r\nHost: a\r\n\r\n", 505),
    "control byte in the target": (b"GET /he\x01llo HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    "head too large": (h1_request("GET", "/hello", [("X-Big", "b" * 2100)]), 431),
    "target too long": (h1_request("GET", "/hello?" + "q" * 1100), 414),
    "declared body too large": (h1_request("POST", "/echo/x", body=b"x" * 5000), 413),
    "chunked body too large": (h1_request("POST", "/echo/x", chunks=[b"y" * 3000] * 2), 413),
    "no Host": (b"GET /hello HTTP/1.1\r\n\r\n", 400),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_cut_anywhere_same_refusal(
    harness: InProcessGateway, backend: Backend, name: str
) -> None:
    bad, status = MALFORMED[name]
    stream = h1_request("GET", "/hello") + bad
    methods = ["GET", "POST"]

    @BOUNDED
    @given(cuts=st.lists(st.integers(1, len(stream) - 1), max_size=10))
    def check(cuts: list[int]) -> None:
        outcome = run_h1(harness, split(stream, cuts), methods, 2)
        assert outcome.errors == []
        assert outcome.statuses == [200, status]
        assert outcome.responses[0].body == b"hello"
        assert outcome.responses[1].header("content-type") == "application/problem+json"
        assert outcome.closed

    check()
    # nothing refused reached the backend whole
    assert [r for r in backend.requests if r["method"] == "POST"] == []
