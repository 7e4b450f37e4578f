"""proxy/raw_head.py against llhttp and the per-field path.

Every head llhttp (httptools) accepts is read three ways: by llhttp's own `on_header`
callbacks, by `split_fields` on its bytes, and, where `rewrite_raw` takes it, by both
`rewrite_raw` and `rewrite_head`. The fields must be identical, and the relayed head and
its framing byte for byte the same. Heads are random (names and values drawn from what
matters to the rewrite: hop-by-hop and framing names in every case, Connection options,
spacing around values, bytes llhttp refuses) and structured (interim heads before the
final one, empty lines before the status line)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import httptools
import pytest

from bastion.policies.fields import FieldEdit
from bastion.proxy import pool, raw_head
from bastion.proxy.raw_head import (
    locate_head,
    locate_head_py,
    rewrite_raw,
    scan_head,
    scan_head_py,
    split_fields,
    split_fields_py,
)
from bastion.proxy.response_head import RESPONSE_KINDS, edit_kinds, rewrite_head

NAMES = [
    b"Server", b"Date", b"date", b"DATE", b"Content-Type", b"Content-Length",
    b"content-length", b"CONTENT-LENGTH", b"Connection", b"connection", b"Keep-Alive",
    b"Transfer-Encoding", b"transfer-encoding", b"Upgrade", b"TE", b"Trailer",
    b"Proxy-Connection", b"Proxy-Authenticate", b"X-Request-ID", b"x-request-id",
    b"X-Secret", b"ETag", b"Set-Cookie", b"Vary", b"X-A", b"8x", b"x", b"Dat",
    b"Connectio", b"Content-Lengths", b"X-Removed-" + b"Long" * 10,
]  # fmt: skip
VALUES = [
    b"", b"v", b"keep-alive", b"close", b"Keep-Alive", b"chunked", b"0", b"12",
    b"close, X-Secret", b"X-Secret", b"a b", b"\xff\xfe", b"text/html; charset=utf-8",
    b"gzip, chunked", b"5 ",
]  # fmt: skip
SPACING = [b" ", b" ", b" ", b"", b"  ", b"\t", b" \t"]
TRAILING = [b"", b"", b"", b" ", b"\t", b"  "]
STATUSES = [200, 200, 204, 304, 404, 500, 101, 100, 103, 199, 299]
BAD = [b"\x00", b"\r", b"\n", b" ", b":", b"\x7f", b"\x01"]


class _Collect:
    def __init__(self) -> None:
        self.fields: list[tuple[bytes, bytes]] = []
        self.heads = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.heads == 0:
            self.fields.append((name, value))

    def on_headers_complete(self) -> None:
        self.heads += 1


_C_ONLY = pytest.mark.skipif(not raw_head.HAVE_C, reason="the C module is the compiled build's")


def llhttp_fields(data: bytes) -> list[tuple[bytes, bytes]] | None:
    """The first head's fields as llhttp's callbacks give them; None if it refuses it."""
    collect = _Collect()
    parser = httptools.HttpResponseParser(collect)
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        pass
    except httptools.HttpParserError:
        return None
    return collect.fields if collect.heads else None


def random_head(rng: random.Random) -> tuple[int, bytes]:
    status = rng.choice(STATUSES)
    lines = [rng.choice([b"", b"", b"\r\n", b"\n", b"\r\n\r\n"])]
    lines.append(b"HTTP/1.1 %d %s\r\n" % (status, rng.choice([b"OK", b"", b"Odd Reason"])))
    for _ in range(rng.randrange(0, 9)):
        name = rng.choice(NAMES)
        value = rng.choice(VALUES)
        line = name + b":" + rng.choice(SPACING) + value + rng.choice(TRAILING)
        if rng.random() < 0.05:
            at = rng.randrange(len(line) + 1)
            line = line[:at] + rng.choice(BAD) + line[at:]
        lines.append(line + b"\r\n")
    lines.append(b"\r\n")
    return status, b"".join(lines)


def check(status: int, data: bytes, begin: int = 0) -> bool:
    """Compare the three readings of the head of `data` read from `begin`; False when
    llhttp refuses it."""
    fields = llhttp_fields(data[begin:])
    if fields is None:
        return False
    start, end = locate_head(data, begin)
    assert start >= begin and data[start:end].endswith(b"\r\n\r\n"), data
    # the compiled build's C scans give what their Python twins give
    assert locate_head_py(data, begin) == (start, end)
    assert scan_head(data, start, end, b"S") == scan_head_py(data, start, end, b"S"), data
    assert split_fields(data, start, end) == fields, data
    for head_request in (False, True):
        raw = rewrite_raw(status, data, start, end, head_request)
        lines, add_date, framing, upstream = rewrite_head(
            status, fields, RESPONSE_KINDS, (), head_request
        )
        if raw is None:
            continue
        parts, raw_add_date, raw_framing, raw_upstream = raw
        assert parts[0] == lines[0]
        assert b"".join(parts) == b"".join(lines), data
        assert (raw_add_date, raw_framing, raw_upstream) == (add_date, framing, upstream)
    return True


# what a route's header rules may remove (lowercase, as policies/headers.py gives them):
# fields kept, Date, hop-by-hop and framing fields (which keep their kind), prefixes
DROPPED = [
    b"x-a", b"x-secret", b"server", b"date", b"set-cookie", b"etag", b"x", b"keep-alive",
    b"content-length", b"connection", b"transfer-encoding", b"upgrade", b"x-request-id",
    b"x-removed-" + b"long" * 10,
]  # fmt: skip
PREFIXES = [b"x-", b"x", b"se", b"d", b"content-", b"t", b"conn", b"8", b"etag", b"x-removed-long"]


def random_edit(rng: random.Random, data: bytes = b"") -> FieldEdit:
    """Removals drawn from the lists above and from the names in `data` (a head)."""
    names = DROPPED + [line.split(b":")[0].lower() for line in data.split(b"\r\n")[1:]]
    drop = frozenset(rng.sample(names, min(len(names), rng.randrange(0, 5))))
    prefixes = tuple(rng.sample(PREFIXES, rng.choice([0, 0, 1, 2])))
    return FieldEdit(drop, prefixes, [b"X-Added: 1\r\n"])


def check_edit(status: int, data: bytes, edit: FieldEdit) -> bool:
    """The head read from its bytes with the route's removals applied in the scan gives
    what the per-field path gives with the route's table; False when it took that path."""
    fields = llhttp_fields(data)
    assert fields is not None
    start, end = locate_head(data, 0)
    assert scan_head(data, start, end, b"S", edit.drop_names, edit.prefixes) == scan_head_py(
        data, start, end, b"S", edit.drop_names, edit.prefixes
    ), (data, edit.drop, edit.prefixes)
    taken = False
    for head_request in (False, True):
        raw = rewrite_raw(status, data, start, end, head_request, edit)
        if raw is None:
            continue
        taken = True
        lines, add_date, framing, upstream = rewrite_head(
            status, fields, edit.kinds or edit_kinds(edit), edit.prefixes, head_request
        )
        parts, raw_add_date, raw_framing, raw_upstream = raw
        assert b"".join(parts) == b"".join(lines), (data, edit.drop, edit.prefixes)
        assert (raw_add_date, raw_framing, raw_upstream) == (add_date, framing, upstream)
    return taken


@pytest.mark.parametrize("seed", range(4))
def test_a_routes_removals_in_the_scan_match_the_per_field_path(seed: int) -> None:
    rng = random.Random(seed)
    taken = removed = 0
    for i in range(2500):
        status, data = random_head(rng)
        if i % 2:  # half of them in the form the scan takes: "Name: value" lines
            status = rng.choice(STATUSES)
            fields = [rng.choice(NAMES) + b": " + rng.choice(VALUES) for _ in range(8)]
            data = b"HTTP/1.1 %d OK\r\n%s\r\n\r\n" % (status, b"\r\n".join(fields))
        if llhttp_fields(data) is None:
            continue
        edit = random_edit(rng, data)
        if check_edit(status, data, edit):
            taken += 1
            raw = rewrite_raw(status, data, *locate_head(data, 0), False)
            with_edit = rewrite_raw(status, data, *locate_head(data, 0), False, edit)
            assert raw is not None and with_edit is not None
            removed += b"".join(raw[0]) != b"".join(with_edit[0])
    # the scan took the edited heads, and removed lines from many of them
    assert taken > 400 and removed > 150


def test_removed_names_are_matched_in_any_case_and_framing_is_kept() -> None:
    data = (
        b"HTTP/1.1 200 OK\r\nSERVER: s\r\nX-Powered-By: p\r\nx-debug-id: 7\r\n"
        b"X-DEBUG-" + b"Long" * 20 + b": 8\r\n"  # (past the kinds table's 32 bytes)
        b"Date: d\r\nContent-Length: 2\r\nX-Kept: k\r\n\r\nok"
    )
    edit = FieldEdit(
        frozenset((b"server", b"x-powered-by", b"date", b"content-length")), (b"x-debug-",), []
    )
    raw = rewrite_raw(200, data, *locate_head(data, 0), False, edit)
    assert raw is not None
    parts, add_date, framing, _ = raw
    assert b"".join(parts) == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Kept: k\r\n"
    assert not add_date  # the route removes Date: none is added either
    assert framing == rewrite_raw(200, data, *locate_head(data, 0), False)[2]  # type: ignore[index]
    assert check_edit(200, data, edit)


@pytest.mark.parametrize("seed", range(8))
def test_random_heads_read_from_their_bytes_match_llhttp_and_the_per_field_path(
    seed: int,
) -> None:
    rng = random.Random(seed)
    accepted = taken = 0
    for _ in range(2500):
        status, data = random_head(rng)
        # (body bytes after the head, where llhttp does not read them as a next answer)
        tail = b"body" if status >= 200 and status not in (204, 304) else b""
        if check(status, data + tail):
            accepted += 1
            start, end = locate_head(data, 0)
            taken += rewrite_raw(status, data, start, end, False) is not None
    # both paths were exercised, not only the refusals
    assert accepted > 1000 and 200 < taken < accepted


def test_a_head_after_interim_heads_in_the_same_bytes_is_found_where_they_end() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: </a>\r\n\r\n"
    final = b"HTTP/1.1 200 OK\r\nX-A: 1\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    data = interim + final
    start, end = locate_head(data, 0)
    assert data[start:end] == b"HTTP/1.1 100 Continue\r\n\r\n"
    start, end = locate_head(data, end)
    assert data[start:end] == b"HTTP/1.1 103 Early\r\nLink: </a>\r\n\r\n"
    assert split_fields(data, start, end) == [(b"Link", b"</a>")]
    start, end = locate_head(data, end)
    assert data[end:] == b"ok"
    raw = rewrite_raw(200, data, start, end, False)
    assert raw is not None
    assert b"".join(raw[0]) == b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 2\r\n"
    assert check(200, data, len(interim))


@pytest.mark.parametrize("prefix", [b"\r\n", b"\n", b"\r\n\r\n\n"])
def test_empty_lines_before_the_status_line_are_skipped(prefix: bytes) -> None:
    data = prefix + b"HTTP/1.1 204 No Content\r\nDate: x\r\n\r\n"
    assert locate_head(data, 0) == (len(prefix), len(data))
    assert check(204, data)


@pytest.mark.parametrize(
    "data",
    [
        b"RTSP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",  # llhttp parses it as a response
        b"ICE/1.0 200 OK\r\n\r\n",
        b"0 OK\r\nContent-Length: 0\r\n\r\n",  # the head's start is not in these bytes
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n",  # nor its end
    ],
)
def test_bytes_that_are_not_the_heads_start_and_end_are_not_taken_for_it(data: bytes) -> None:
    assert locate_head(data, 0) == (-1, -1)


@pytest.mark.parametrize(
    "line",
    [
        b"X-A:tight",
        b"X-A:",
        b"X-A:  two spaces",
        b"X-A: \tspace and tab",
        b"X-A:\ttab",
        b"Connection: close, X-A",
        b"Connection: X-A",
    ],
)
def test_heads_rewrite_head_would_write_differently_take_the_per_field_path(
    line: bytes,
) -> None:
    data = b"HTTP/1.1 200 OK\r\nX-B: b\r\n" + line + b"\r\nContent-Length: 0\r\n\r\n"
    assert rewrite_raw(200, data, *locate_head(data, 0), False) is None
    assert check(200, data)


def test_a_101_takes_the_per_field_path() -> None:
    data = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    assert rewrite_raw(101, data, *locate_head(data, 0), False) is None


def test_dropped_lines_split_the_kept_runs() -> None:
    data = (
        b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\nX-B: 2\r\n"
        b"Transfer-Encoding: chunked\r\nX-C: 3\r\nTE: trailers\r\n\r\n"
    )
    raw = rewrite_raw(200, data, *locate_head(data, 0), False)
    assert raw is not None
    parts, add_date, _framing, _ = raw
    assert parts == [b"HTTP/1.1 200 OK\r\n", b"X-A: 1\r\nX-B: 2\r\n", b"X-C: 3\r\n"]
    assert add_date
    assert check(200, data)


PIECES = [
    b"HTTP/", b"HTTP/1.1 200 OK", b"\r\n", b"\r\n\r\n", b"\r", b"\n", b":", b": ", b" ", b"\t",
    b"Date", b"CONTENT-length", b"Connection", b"keep-alive", b"Keep-Alive", b"close, x",
    b"transfer-encoding", b"TE", b"x-request-id", b"X-A", b"v", b"\x00", b"\xff", b"",
]  # fmt: skip


@pytest.mark.parametrize("seed", range(4))
def test_the_scans_and_their_twins_agree_on_any_bytes(seed: int) -> None:
    """Not only on heads llhttp accepted: on arbitrary bytes and bounds, the C scans
    (compiled build) and the Python ones return the same, refusals included."""
    rng = random.Random(seed)
    for _ in range(4000):
        buf = b"".join(rng.choice(PIECES) for _ in range(rng.randrange(0, 30)))
        begin = rng.randrange(-2, len(buf) + 3)
        assert locate_head(buf, begin) == locate_head_py(buf, begin), (buf, begin)
        start = rng.randrange(-1, len(buf) + 2)
        end = rng.randrange(-1, len(buf) + 3)
        got = scan_head(buf, start, end, b"S")
        assert got == scan_head_py(buf, start, end, b"S"), (buf, start, end)
        edit = random_edit(rng)
        got = scan_head(buf, start, end, b"S", edit.drop_names, edit.prefixes)
        assert got == scan_head_py(buf, start, end, b"S", edit.drop_names, edit.prefixes)
        # the split takes only bounds inside the buffer, with room for the blank line
        if 0 <= start <= end - 4 <= len(buf) - 4:
            fields = split_fields(buf, start, end)
            assert fields == split_fields_py(buf, start, end), (buf, start, end)


@_C_ONLY
def test_the_c_split_refuses_bounds_outside_the_buffer() -> None:
    from bastion.proxy import _rawhead

    buf = b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n"
    assert _rawhead.split(buf, 0, len(buf)) == [(b"A", b"b")]
    for start, end in ((-1, len(buf)), (0, len(buf) + 1), (0, 3), (5, 8), (2**62, 2**62 + 5)):
        with pytest.raises(ValueError):
            _rawhead.split(buf, start, end)


@_C_ONLY
@pytest.mark.parametrize(
    "extra",
    [([b"x"],), ([b"x"], ()), ((b"x",), (b"a", "b")), (("x",), ()), ((), [b"x"])],
)
def test_the_c_scan_refuses_removals_that_are_not_tuples_of_bytes(
    extra: tuple[object, ...],
) -> None:
    from bastion.proxy import _rawhead

    buf = b"HTTP/1.1 200 OK\r\nX: b\r\n\r\n"
    with pytest.raises(TypeError):
        _rawhead.scan(buf, 0, len(buf), b"S", *extra)
    assert _rawhead.scan(buf, 0, len(buf), b"S", (b"x",), ()) == ([b"S"], False, False, b"")
    assert _rawhead.scan(buf, 0, len(buf), b"S", (b"x",)) == ([b"S"], False, False, b"")
    with pytest.raises(TypeError):
        _rawhead.scan(buf, 0, len(buf), b"S", (), (), ())


def test_the_compiled_build_runs_the_c_scans() -> None:
    """The pure build runs the twins; the compiled one must have built the C module
    (BASTION_EXPECT_BUILD, as tests/unit/test_build.py)."""
    import os

    expected = os.environ.get("BASTION_EXPECT_BUILD", "")
    if expected == "compiled":
        assert raw_head.HAVE_C and locate_head is not locate_head_py
        assert split_fields is not raw_head.split_fields_py
    elif expected == "pure":
        assert not raw_head.HAVE_C and locate_head is locate_head_py


# ------------------------------------------- the C module's arguments (compiled build)
def _run_isolated(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`script` in a Python of its own (a crash ends it, not the test run), importing
    this bastion; `env` added to its environment."""
    import bastion

    source = str(Path(bastion.__file__).resolve().parent.parent)
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": source, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bounds_whose_difference_overflows_are_refused_like_any_other() -> None:
    """scan() takes any ints; `end - start` must not overflow into a huge head (the C
    scan then read from `buf + start`, far outside the buffer)."""
    script = (
        "from bastion.proxy.raw_head import scan_head, scan_head_py\n"
        "buf = b'HTTP/1.1 200 OK\\r\\nX-A: 1\\r\\n\\r\\n'\n"
        "for start, end in ((2**62, -(2**62) - 10), (1, -(2**63)), (2**63 - 1, -2)):\n"
        "    assert scan_head(buf, start, end, b'S') is None, (start, end)\n"
        "    assert scan_head_py(buf, start, end, b'S') is None\n"
        "print('refused')\n"
    )
    done = _run_isolated(script)
    assert done.returncode == 0 and done.stdout == "refused\n", (done.returncode, done.stderr)


@_C_ONLY
def test_a_configure_that_fails_leaves_the_table_it_had() -> None:
    """A configure() that raises half-way must not leave the scans with a partial (here
    empty) table: they would relay the hop-by-hop fields they are there to drop."""
    script = (
        "from bastion.proxy import _rawhead\n"
        "from bastion.proxy.raw_head import scan_head_py\n"
        "buf = b'HTTP/1.1 200 OK\\r\\nConnection: close\\r\\nTransfer-Encoding: chunked\\r\\n"
        "X-A: 1\\r\\n\\r\\n'\n"
        "for bad in ({b'x' * 40: 6}, {b'te': 'six'}):\n"
        "    try:\n"
        "        _rawhead.configure(bad, (), (0, 1, 2, 3, 4))\n"
        "    except (ValueError, TypeError):\n"
        "        pass\n"
        "    assert _rawhead.scan(buf, 0, len(buf), b'S') == scan_head_py(buf, 0, len(buf), b'S')\n"
        "try:\n"
        "    _rawhead.configure({b'te': 6}, (), (0, 1, 2))\n"
        "except TypeError:\n"
        "    pass\n"
        "assert _rawhead.scan(buf, 0, len(buf), b'S') == scan_head_py(buf, 0, len(buf), b'S')\n"
        "print('kept')\n"
    )
    done = _run_isolated(script)
    assert done.returncode == 0 and done.stdout == "kept\n", (done.returncode, done.stderr)


@_C_ONLY
def test_configure_holds_no_borrowed_name_across_python_code() -> None:
    """A kind that is not an int runs Python code (its __index__) in the middle of the
    table's copy; a name borrowed from the dict may be freed by then (PYTHONMALLOC=debug
    fills freed memory, so a read of it fails at once)."""
    script = (
        "from bastion.proxy import _rawhead\n"
        "class Kind:\n"
        "    def __index__(self):\n"
        "        kinds.clear()\n"
        "        return 6\n"
        "kinds = {bytes(bytearray(b'proxy-connection')): Kind()}\n"
        "try:\n"
        "    _rawhead.configure(kinds, (), (0, 1, 2, 3, 4))\n"
        "except TypeError:\n"
        "    pass\n"
        "print('survived')\n"
    )
    done = _run_isolated(script, PYTHONMALLOC="debug")
    assert done.returncode == 0 and done.stdout == "survived\n", (done.returncode, done.stderr)


# --------------------------------------- the connection's head bookkeeping (proxy/pool.py)
class _Handler:
    max_response_header_bytes = 8192
    max_response_header_fields = 100


class _Client:
    def cork(self) -> None:
        pass

    def uncork(self) -> None:
        pass


class _Exchange:
    """What the connection tells an exchange, written down; the head relayed as
    Exchange.on_response_head relays it without header rules."""

    tunnelling = False

    def __init__(self, conn: pool.UpstreamConnection) -> None:
        self.conn = conn
        conn.exchange = self  # type: ignore[assignment]
        self.handler = _Handler()
        self.client = _Client()
        self.events: list[tuple[object, ...]] = []
        self.interim = False

    def on_response_head(self, status: int) -> None:
        if status < 200:
            self.interim = True
            self.events.append(("interim", status))
            return
        conn = self.conn
        fields = conn.resp_headers
        raw = None
        if fields is None:
            raw = rewrite_raw(status, conn.head_buf, conn.head_start, conn.head_end, False)
            fields = conn.fields() if raw is None else []
        if raw is None:
            raw = rewrite_head(status, fields, RESPONSE_KINDS, (), False)
        self.events.append(("head", b"".join(raw[0])))

    def on_response_body(self, data: bytes) -> None:
        self.events.append(("body", data))

    def on_response_end(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.events.append(("end",))
        self.conn.exchange = None

    def upstream_failed(self, exc: Exception) -> None:
        self.events.append(("failed", str(exc)))
        self.conn.exchange = None


CONNECTIONS = [pool.UpstreamConnection, pool.FieldsUpstreamConnection]  # (compiled, pure)
# The stand-ins above are handed to the connection where an Exchange and a Pool belong: a
# compiled pool.py checks those types at run time and refuses them. The bookkeeping is the
# same source in both builds, and runs here interpreted (the pure build's unit tests, which
# `make test` runs too); tests/integration/test_hostile_upstream.py drives the same cases
# through a real gateway in both builds.
_INTERPRETED_POOL = pytest.mark.skipif(
    not (pool.__file__ or "").endswith(".py"), reason="stand-ins need the interpreted pool.py"
)


@_INTERPRETED_POOL
@pytest.mark.parametrize("kind", CONNECTIONS)
def test_interim_heads_over_many_reads_are_not_kept(kind: type[pool.UpstreamConnection]) -> None:
    """Reads that each end inside an interim head: once read, a head's bytes are let go
    (they were kept and joined again at each head, memory and time growing with the
    whole flood)."""
    conn = kind(None)  # type: ignore[arg-type]
    exchange = _Exchange(conn)
    hint = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    read = hint[20:] + hint * 20 + hint[:20]
    conn.data_received(hint[:20])
    for _ in range(200):
        conn.data_received(read)
        assert len(conn.head_buf) + sum(map(len, conn.head_more)) <= 2 * len(read)
    conn.data_received(hint[20:] + b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok")
    assert exchange.events[-3:] == [
        ("head", b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 2\r\n"),
        ("body", b"ok"),
        ("end",),
    ]


@_INTERPRETED_POOL
@pytest.mark.parametrize("kind", CONNECTIONS)
def test_a_head_read_with_the_end_of_an_interim_one_is_held_to_the_limit(
    kind: type[pool.UpstreamConnection],
) -> None:
    """The bytes of the final head read with the 100 count too: both builds refuse a head
    over the limit however its bytes were split."""
    head = b"HTTP/1.1 200 OK\r\nX-Big: " + b"v" * 9000 + b"\r\nContent-Length: 2\r\n\r\nok"
    data = b"HTTP/1.1 100 Continue\r\n\r\n" + head
    for split in (10, 30, 4000, 5000, 8000, len(data) - 10):
        conn = kind(None)  # type: ignore[arg-type]
        exchange = _Exchange(conn)
        conn.data_received(data[:split])
        if conn.exchange is not None:
            conn.data_received(data[split:])
        assert exchange.events[-1] == ("failed", "upstream sent too big header (limit 8192 bytes)")


@_INTERPRETED_POOL
@pytest.mark.parametrize("kind", CONNECTIONS)
def test_a_trailer_section_does_not_count_against_the_next_head(
    kind: type[pool.UpstreamConnection],
) -> None:
    """A trailer section read on its own (within the limit) is done with at the answer's
    end: the next answer's head, on the same connection, starts a count of its own."""
    conn = kind(None)  # type: ignore[arg-type]
    exchange = _Exchange(conn)
    conn.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n")
    conn.data_received(b"0\r\nX-T: " + b"t" * 7000 + b"\r\n\r\n")
    assert exchange.events[-1] == ("end",)
    exchange = _Exchange(conn)
    head = b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 3000 + b"\r\nContent-Length: 2\r\n\r\nok"
    conn.data_received(head[:2000])
    conn.data_received(head[2000:])
    assert exchange.events == [
        ("head", head[:-2].replace(b"\r\n\r\n", b"\r\n")),
        ("body", b"ok"),
        ("end",),
    ]


@_INTERPRETED_POOL
@pytest.mark.parametrize("kind", CONNECTIONS)
@pytest.mark.parametrize("over", [0, 1])
def test_the_limit_is_the_heads_size_as_sent_however_it_is_split(
    kind: type[pool.UpstreamConnection], over: int
) -> None:
    """A head of exactly the limit (status line, fields, line ends) is relayed, one byte
    more is refused, whichever read its bytes come in, after an interim head or not."""
    status = b"HTTP/1.1 200 OK\r\n"
    filler = 8192 - len(status) - len(b"X-Pad: \r\nContent-Length: 2\r\n\r\n") + over
    head = status + b"X-Pad: " + b"p" * filler + b"\r\nContent-Length: 2\r\n\r\n"
    assert len(head) == 8192 + over
    for before in (b"", b"HTTP/1.1 100 Continue\r\n\r\n"):
        data = before + head + b"ok"
        for split in [*range(0, 40), *range(len(data) - 40, len(data))]:
            conn = kind(None)  # type: ignore[arg-type]
            exchange = _Exchange(conn)
            for piece in (data[:split], data[split:]):
                if piece and conn.exchange is not None:
                    conn.data_received(piece)
            if over:
                assert exchange.events[-1][0] == "failed", (split, exchange.events)
            else:
                body = b"".join(e[1] for e in exchange.events if e[0] == "body")
                assert exchange.events[-1] == ("end",) and body == b"ok", split
