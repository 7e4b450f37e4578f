"""Choosing a content coding and recognising compressible types (policies/compress.py)."""

from __future__ import annotations

import gzip

import brotli
import pytest
import zstandard

from bastion.config.policy_body import Compress
from bastion.http.request import BODY_CHUNKED, BODY_FIXED, BODY_LENGTH, Request
from bastion.policies.base import ResponseHead
from bastion.policies.compress import CompressPolicy, choose_encoding, parse_accept_encoding

OFFERED = ["zstd", "br", "gzip"]


def test_parse_accept_encoding() -> None:
    assert parse_accept_encoding("gzip;q=0.5, BR , zstd;q=0,x;q=2, y;q=abc") == {
        "gzip": 0.5,
        "br": 1.0,
        "zstd": 0.0,
        "x": 0.0,  # out of range: not acceptable
        "y": 0.0,
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("gzip, br, zstd", "zstd"),
        ("br;q=0.8, gzip;q=0.9", "gzip"),
        ("*", "zstd"),
        ("*;q=0.5, zstd;q=0", "br"),
        ("x-gzip", "gzip"),
        ("identity, deflate", None),
        ("", None),
        ("gzip;q=0", None),
    ],
)
def test_choose_encoding(value: str, expected: str | None) -> None:
    assert choose_encoding(value, OFFERED) == expected


def _request(accept: bytes | None, method: str = "GET") -> Request:
    req = Request()
    req.method = method
    if accept is not None:
        req.headers = [(b"accept-encoding", b"Accept-Encoding", accept)]
    return req


def _head(
    content_type: bytes, length: int | None = 5000, framing: int = BODY_LENGTH
) -> ResponseHead:
    lines = b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\n"
    if length is not None:
        lines += b"Content-Length: %d\r\n" % length
    return ResponseHead(lines, framing)


@pytest.mark.parametrize(
    ("content_type", "compressed"),
    [
        (b"text/html; charset=utf-8", True),
        (b"application/json", True),
        (b"application/problem+json", True),
        (b"application/atom+xml", True),
        (b"image/svg+xml", True),
        (b"TEXT/CSS", True),
        (b"text/event-stream", False),
        (b"image/png", False),
        (b"application/octet-stream", False),
        (b"application/jsonx", False),
        (b"nonsense", False),
    ],
)
def test_default_types(content_type: bytes, compressed: bool) -> None:
    policy = CompressPolicy(Compress())
    head = _head(content_type)
    policy.on_response(_request(b"gzip"), head)
    assert (head.get(b"content-encoding") == b"gzip") is compressed
    assert (head.body_filter is not None) is compressed


def test_filters_round_trip_every_coding() -> None:
    policy = CompressPolicy(Compress())
    data = [b"alpha " * 300, b"beta " * 300, b"", b"gamma"]
    decoders = {
        b"gzip": gzip.decompress,
        b"br": brotli.decompress,
        b"zstd": lambda d: zstandard.ZstdDecompressor().decompressobj().decompress(d),
    }
    for coding, decode in decoders.items():
        head = _head(b"text/plain", None, BODY_CHUNKED)
        policy.on_response(_request(coding), head)
        assert head.get(b"content-encoding") == coding
        body_filter = head.body_filter
        assert body_filter is not None
        out = b"".join(body_filter.feed(part) for part in data) + body_filter.finish()
        assert decode(out) == b"".join(data)


def test_answers_left_alone() -> None:
    policy = CompressPolicy(Compress(min_size=100))
    small = _head(b"text/plain", 99)
    policy.on_response(_request(b"gzip"), small)
    assert small.body_filter is None and small.get(b"vary") is None
    empty = _head(b"text/plain", 0)
    CompressPolicy(Compress(min_size=0)).on_response(_request(b"gzip"), empty)
    assert empty.body_filter is None
    fixed = _head(b"application/problem+json", 5000, BODY_FIXED)
    policy.on_response(_request(b"gzip"), fixed)
    assert fixed.body_filter is None and fixed.get(b"vary") is None
    head = _head(b"text/plain")
    policy.on_response(_request(b"gzip", "HEAD"), head)
    assert head.body_filter is None and head.get(b"vary") == b"Accept-Encoding"
    partial = ResponseHead(
        b"HTTP/1.1 206 Partial Content\r\nContent-Type: text/plain\r\nContent-Length: 5000\r\n",
        BODY_LENGTH,
    )
    policy.on_response(_request(b"gzip"), partial)
    assert partial.body_filter is None


def test_type_settings_validation() -> None:
    assert Compress(types=["Text/*", "application/*+json"]).types == [
        "text/*",
        "application/*+json",
    ]
    for bad in ("html", "*/*", "application/js*"):
        with pytest.raises(ValueError):
            Compress(types=[bad])
