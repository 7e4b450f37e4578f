"""A cheap HPACK encoder for the header blocks the gateway sends.

`h2` keeps driving the streams (states, frame splitting, flow control); only its
`encoder` attribute is swapped for this one. The `hpack` encoder searches and
updates the dynamic table and Huffman-codes every string in Python, which cost
more than the rest of a proxied request. This one never inserts into the dynamic
table (RFC 7541 lets an encoder leave it unused): a field is either a static-table
index, or a literal whose name is a static index or a literal too, with the value
sent raw. The block grows by a few bytes; encoding becomes a few dict lookups.

Callers hand it validated, lowercased fields (see `headers.response_headers`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from hpack.table import HeaderTable

# names whose values must not be added to any table on the way (RFC 7541 §7.1.3):
# sent as "never indexed" literals, as the `hpack` encoder does for them
_SENSITIVE: Final = frozenset((b"authorization", b"proxy-authorization", b"cookie", b"set-cookie"))


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """RFC 7541 §5.1 integer with an N-bit prefix; `first` holds the pattern bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _build_tables() -> tuple[dict[tuple[bytes, bytes], bytes], dict[bytes, bytes]]:
    full: dict[tuple[bytes, bytes], bytes] = {}
    names: dict[bytes, bytes] = {}
    for index, (name, value) in enumerate(HeaderTable.STATIC_TABLE, start=1):
        full.setdefault((name, value), _integer(index, 7, 0x80))
        if name not in names:
            pattern = 0x10 if name in _SENSITIVE else 0x00
            names[name] = _integer(index, 4, pattern)
    return full, names


_TABLES: Final = _build_tables()
_FULL: Final = _TABLES[0]
_NAMES: Final = _TABLES[1]
# value lengths below 127 take one byte; precomputed as the most common case
_LENGTHS: Final = tuple(bytes((n,)) for n in range(127))


def _string(data: bytes) -> bytes:
    size = len(data)
    if size < 127:
        return _LENGTHS[size] + data
    return _integer(size, 7, 0x00) + data


class StaticEncoder:
    """Stands in for `hpack.Encoder` on an `H2Connection` (attribute `encoder`)."""

    __slots__ = ("_size", "_size_update")

    def __init__(self) -> None:
        self._size = 4096  # the peer's SETTINGS_HEADER_TABLE_SIZE, initially the default
        self._size_update: int | None = None

    @property
    def header_table_size(self) -> int:
        return self._size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        # h2 sets this when the peer's SETTINGS_HEADER_TABLE_SIZE changes. The table
        # stays empty either way, but the next block acknowledges the new maximum
        # with a size update (RFC 7541 §4.2): the smallest one seen since the last
        # block, then the current one when it differs.
        if value != self._size:
            self._size = value
            pending = self._size_update
            self._size_update = value if pending is None else min(pending, value)

    def encode(self, headers: Iterable[tuple[bytes, bytes]], huffman: bool = True) -> bytes:
        parts: list[bytes] = []
        smallest = self._size_update
        if smallest is not None:
            self._size_update = None
            parts.append(_integer(smallest, 5, 0x20))
            if self._size != smallest:
                parts.append(_integer(self._size, 5, 0x20))
        full = _FULL
        names = _NAMES
        for name, value in headers:
            indexed = full.get((name, value))
            if indexed is not None:
                parts.append(indexed)
                continue
            prefix = names.get(name)
            if prefix is None:
                parts.append(b"\x10" if name in _SENSITIVE else b"\x00")
                parts.append(_string(name))
            else:
                parts.append(prefix)
            parts.append(_string(value))
        return b"".join(parts)
