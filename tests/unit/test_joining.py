"""http/joining.py: `join_bytes` is b"".join, in C in the compiled build (http/_join.c).

The C function must give exactly what b"".join gives, object identity of a lone piece
included, for every list of bytes (random lengths and counts, empty pieces, large pieces),
and hand anything else (a tuple, bytearray or memoryview pieces, a bytes subclass, a piece
that is not bytes-like) to b"".join, so that results and errors stay b"".join's."""

from __future__ import annotations

import os
import random

import pytest

from bastion.http import joining
from bastion.http.joining import join_bytes

try:
    from bastion.http import _join
except ImportError:  # the pure build
    _join = None  # type: ignore[assignment]

_C_ONLY = pytest.mark.skipif(_join is None, reason="the C module is the compiled build's")


def test_the_compiled_build_joins_in_c() -> None:
    """The pure build runs b"".join; the compiled one must have built the C module
    (BASTION_EXPECT_BUILD, as tests/unit/test_build.py)."""
    expected = os.environ.get("BASTION_EXPECT_BUILD", "")
    if expected == "compiled":
        assert _join is not None and joining.join_bytes is _join.join
    elif expected == "pure":
        assert _join is None and joining.join_bytes == b"".join


def _random_parts(rng: random.Random) -> list[bytes]:
    count = rng.choice((0, 1, 2, 5, 10, 11, 30, 100))
    parts = []
    for _ in range(count):
        size = rng.choice((0, 1, 2, 7, 40, 300, 70000))
        parts.append(rng.randbytes(size))
    return parts


@_C_ONLY
def test_the_c_join_is_bytes_join_on_lists_of_bytes() -> None:
    rng = random.Random(1234)
    for _ in range(400):
        parts = _random_parts(rng)
        assert _join.join(parts) == b"".join(parts)
    lone = b"one piece"
    assert _join.join([lone]) is lone  # as b"".join: no copy of a lone piece
    assert _join.join([]) == b""


class _Bytes(bytes):
    pass


@_C_ONLY
@pytest.mark.parametrize(
    "parts",
    [
        (b"a", b"b"),  # not a list
        [b"a", bytearray(b"b"), b"c"],
        [b"a", memoryview(b"bc")],
        [_Bytes(b"sub"), b"class"],
        [bytearray(b"x")],
    ],
)
def test_anything_else_goes_to_bytes_join(parts: object) -> None:
    assert _join.join(parts) == b"".join(parts)  # type: ignore[arg-type]
    assert type(_join.join(parts)) is bytes  # type: ignore[arg-type]


@_C_ONLY
@pytest.mark.parametrize("parts", [[b"a", "text"], [b"a", 3], [None], 5])
def test_a_piece_that_is_not_bytes_like_fails_as_bytes_join_fails(parts: object) -> None:
    with pytest.raises(TypeError) as expected:
        b"".join(parts)  # type: ignore[arg-type]
    with pytest.raises(TypeError) as got:
        _join.join(parts)  # type: ignore[arg-type]
    assert str(got.value) == str(expected.value)


def test_join_bytes_joins() -> None:
    """Whichever build: the heads assembled on the request path come out whole."""
    assert join_bytes([b"GET / HTTP/1.1\r\n", b"Host: a\r\n", b"\r\n"]) == (
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    )
