"""Upstream response heads read from their bytes, with no Python call per field.

The upstream's parser (llhttp, through httptools) is given no `on_header` callback: it
still validates every byte of the head, but a field costs it no call into Python, no pair
of bytes objects and no list entry. Once it reports the head complete, the head is found
in the bytes it was fed (`locate_head`), and:

- `rewrite_raw` relays it in runs of whole lines, dropping the hop-by-hop ones and those
  the route's header rules remove, for the common case: no cache, no `Connection` option
  naming other fields, every line in the form ``Name: value``;
- `split_fields` gives the (name, value) list llhttp's callbacks would have given, for
  everything else (response_head.rewrite_head, the cache, S3).

What makes reading the bytes safe is that llhttp has accepted them before either runs: in
its strict mode a head is a status line and ``name:OWS value`` lines, each ending in CR LF,
with no obs-fold, no bare CR or LF, no whitespace before a colon, and no NUL or other
control byte in a value; it skips only empty lines before the status line. So the first
CR LF CR LF after the status line's start ends the head, and the first colon of a line
ends its name. tests/unit/test_raw_head.py checks both functions against llhttp's
callbacks and `rewrite_head` on random and structured heads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from bastion.http.status import STATUS_LINES, status_line
from bastion.proxy.response_head import (
    CHUNKED,
    CONNECTION,
    DATE,
    KEEP,
    LENGTH,
    PLAIN_CONNECTION,
    RESPONSE_KINDS,
    framing_of,
)

if TYPE_CHECKING:
    from bastion.policies.fields import FieldEdit

__all__ = [
    "HAVE_C",
    "UpstreamHeadError",
    "head_too_large",
    "locate_head",
    "rewrite_raw",
    "scan_head",
    "split_fields",
]


class UpstreamHeadError(Exception):
    """A response head bastion refuses to relay: too large, or a status out of range."""


def head_too_large(limit: int) -> UpstreamHeadError:
    # nginx's words for the same refusal, so that operators recognise it
    return UpstreamHeadError(f"upstream sent too big header (limit {limit} bytes)")


def _candidates() -> bytes:
    """One byte per (name length, first letter) pair, set where a field of that length
    and initial might be one `rewrite_raw` must look at (any kind but KEEP). A line whose
    pair is not set is kept without its name being copied, lowercased or hashed."""
    table = bytearray(32 * 32)
    for name, kind in RESPONSE_KINDS.items():
        if kind != KEEP and len(name) < 32:
            table[len(name) << 5 | (name[0] & 31)] = 1
    return bytes(table)


# (letters only differ in bit 5 between cases, so `& 31` folds case; a digit or symbol
# sharing the low bits of a letter only costs an exact look-up)
_CANDIDATE: Final = _candidates()


def locate_head_py(buf: bytes, begin: int) -> tuple[int, int]:
    """Where the response head that llhttp has accepted, read from `begin` in `buf`,
    starts (its status line: llhttp skips empty lines before it) and ends (just past its
    blank line); (-1, -1) when it is not there, and the caller refuses the answer rather
    than relay other bytes. (The twin of `_rawhead.locate`.)"""
    start = begin
    size = len(buf)
    if start < 0 or start > size:
        return -1, -1
    if not buf.startswith(b"HTTP/", start):  # (most heads start where they are looked for)
        while start < size and (buf[start] == 13 or buf[start] == 10):
            start += 1
        if not buf.startswith(b"HTTP/", start):
            return -1, -1
    end = buf.find(b"\r\n\r\n", start)
    if end < 0:
        return -1, -1
    return start, end + 4


def scan_head_py(
    buf: bytes,
    start: int,
    end: int,
    status_line: bytes,
    drop: tuple[bytes, ...] = (),
    prefixes: tuple[bytes, ...] = (),
) -> tuple[list[bytes], bool, bool, bytes] | None:
    """The head from `start` to `end` in `buf` relayed: ``(parts, has_date, chunked,
    length)``, `parts` being `status_line` then the runs of kept lines, each a slice of
    `buf`; None when a line is not in ``Name: value`` form or a Connection option may name
    a field (rewrite_head then does it). (The twin of `_rawhead.scan`.)

    `drop` and `prefixes` are the lowercase names and name prefixes a route's header rules
    remove (`policies.fields.FieldEdit`), with `response_head.edit_kinds`'s meaning: an
    exact name removes a field kept or a Date (the Date is then not counted), a prefix
    only a field kept; framing and hop-by-hop fields keep their kind."""
    if start < 0 or end > len(buf) or end - start < 4:
        return None
    stop = end - 2  # where the blank line begins
    pos = buf.find(b"\n", start, stop)
    if pos < 0:
        return None
    pos += 1
    run = pos  # the first line of the run of kept lines not yet in `parts`
    parts = [status_line]
    chunked = False
    length = b""
    has_date = False
    while pos < stop:
        eol = buf.find(b"\r", pos, stop)
        if eol < 0 or buf[eol + 1] != 10:
            return None
        colon = buf.find(b":", pos, eol)
        if colon < 0 or colon + 1 >= eol or buf[colon + 1] != 32:
            return None  # "Name:value" or "Name:": rewrite_head writes one space
        if colon + 2 < eol and (buf[colon + 2] == 32 or buf[colon + 2] == 9):
            return None  # more whitespace than one space before the value
        size = colon - pos
        kind = KEEP
        if size < 32 and _CANDIDATE[size << 5 | (buf[pos] & 31)]:
            kind = RESPONSE_KINDS.get(buf[pos:colon].lower(), KEEP)
        if (drop or prefixes) and _removed(buf[pos:colon].lower(), kind, drop, prefixes):
            if run < pos:
                parts.append(buf[run:pos])
            run = eol + 2
        elif kind != KEEP:
            if kind == LENGTH:
                length = buf[colon + 2 : eol]
            elif kind == DATE:
                has_date = True
            else:
                if kind == CHUNKED:
                    chunked = True
                elif kind == CONNECTION and buf[colon + 2 : eol] not in PLAIN_CONNECTION:
                    return None
                # a dropped line: the run before it is relayed, the next starts after it
                if run < pos:
                    parts.append(buf[run:pos])
                run = eol + 2
        pos = eol + 2
    if run < stop:
        parts.append(buf[run:stop])
    return parts, has_date, chunked, length


def _removed(lname: bytes, kind: int, drop: tuple[bytes, ...], prefixes: tuple[bytes, ...]) -> bool:
    if kind != KEEP and kind != DATE:
        return False
    return lname in drop or (kind == KEEP and lname.startswith(prefixes))


locate_head: Callable[[bytes, int], tuple[int, int]]
# (buf, start, end, status_line[, drop, prefixes]): see scan_head_py
scan_head: Callable[..., tuple[list[bytes], bool, bool, bytes] | None]
try:
    from bastion.proxy import _rawhead
except ImportError:  # the pure build
    HAVE_C = False
    locate_head = locate_head_py
    scan_head = scan_head_py
else:
    HAVE_C = True
    _rawhead.configure(
        {name: kind for name, kind in RESPONSE_KINDS.items() if kind != KEEP and name.islower()},
        PLAIN_CONNECTION,
        (KEEP, LENGTH, DATE, CHUNKED, CONNECTION),
    )
    locate_head = _rawhead.locate
    scan_head = _rawhead.scan


def split_fields_py(buf: bytes, start: int, end: int) -> list[tuple[bytes, bytes]]:
    """The head's fields as llhttp's `on_header` gives them: the name as sent, the value
    without the whitespace after the colon (trailing whitespace kept). (The twin of
    `_rawhead.split`, which takes only bounds with 0 <= start <= end - 4 <= len(buf) - 4.)"""
    fields: list[tuple[bytes, bytes]] = []
    lines = buf[start : end - 4].split(b"\r\n")
    for i in range(1, len(lines)):
        name, _sep, value = lines[i].partition(b":")
        fields.append((name, value.lstrip(b" \t")))
    return fields


# Compiled, the twin's calls of bytes methods by name (`split`, then `partition` and `lstrip`
# a line) cost some 700 instructions each: about 10k for a head of five fields, which every
# response of a route with a cache or S3 pays, and every head the scan refuses
# (docs/benchmarks.md).
split_fields: Callable[[bytes, int, int], list[tuple[bytes, bytes]]] = (
    _rawhead.split if HAVE_C else split_fields_py
)


# C statics (http1/head.py says why): read once a response
_scan_head: Final = scan_head
_STATUS_LINES: Final = STATUS_LINES
_status_line: Final = status_line


def rewrite_raw(
    status: int,
    buf: bytes,
    start: int,
    end: int,
    head_request: bool,
    edit: FieldEdit | None = None,
) -> tuple[list[bytes], bool, int, int] | None:
    """What `rewrite_head(status, split_fields(buf, start, end), kinds, prefixes,
    head_request)` returns, the lines joined differently (whole runs of kept lines are one
    piece), or None when this head needs that path: a 101, or what `scan_head` refuses.
    `kinds` and `prefixes` are RESPONSE_KINDS and () without an `edit`, else the route's
    (`edit_kinds(edit)`, `edit.prefixes`); the edit's added lines are the caller's."""
    if status == 101:
        return None
    line = _STATUS_LINES.get(status) or _status_line(status)
    if edit is None:
        scanned = _scan_head(buf, start, end, line)
    else:
        scanned = _scan_head(buf, start, end, line, edit.drop_names, edit.prefixes)
    if scanned is None:
        return None
    parts, has_date, chunked, length = scanned
    framing, upstream_framing = framing_of(status, head_request, chunked, length)
    # a route that removes Date gets none added either (as rewrite_head)
    add_date = not has_date and (edit is None or not edit.drops_date)
    return parts, add_date, framing, upstream_framing
