"""HPACK decoding with a small per-connection memo of repeated header blocks.

A client sending the same request again (an API poller, a page's many requests
for the same kind of resource, a load generator) encodes it with the same bytes:
references into the static table and into the dynamic table entries an earlier
request inserted, and literals it chose not to index (nghttp2, curl's library,
never indexes `:path`, for one). A block of only those cannot change the dynamic
table, so while the table is unchanged the same bytes decode to the same list.
Every other block is decoded by the `hpack` library (pure Python: its Huffman
decoding alone costs some 50k instructions for a short literal); a block that
may change the table (a literal with incremental indexing, a size update) empties
the memo.
"""

from __future__ import annotations

from typing import Any, Final

from hpack import Decoder

_MEMO_SIZE: Final = 32  # distinct blocks remembered per connection


def changes_table(block: bytes) -> bool:
    """Whether a header block may change the decoder's dynamic table (RFC 7541 §6): it
    holds a literal with incremental indexing or a table size update, or it is cut short
    (then the decoder will refuse it anyway)."""
    pos = 0
    end = len(block)
    while pos < end:
        first = block[pos]
        if first & 0x80:  # indexed field (§6.1)
            pos = _skip_integer(block, pos, 0x7F)
        elif first & 0x40 or first & 0x20:  # incremental indexing (§6.2.1), size update (§6.3)
            return True
        else:  # literal without indexing or never indexed (§6.2.2, §6.2.3)
            named = first & 0x0F
            pos = _skip_integer(block, pos, 0x0F)
            if not named:
                pos = _skip_string(block, pos)
            pos = _skip_string(block, pos)
        if pos < 0:
            return True
    return False


def _skip_integer(block: bytes, pos: int, mask: int) -> int:
    """The position after an integer whose prefix is `mask` (§5.1); -1 if cut short."""
    if block[pos] & mask != mask:
        return pos + 1
    pos += 1
    end = len(block)
    while pos < end:
        if not block[pos] & 0x80:
            return pos + 1
        pos += 1
    return -1


def _skip_string(block: bytes, pos: int) -> int:
    """The position after a string literal (§5.2); -1 if cut short."""
    if pos < 0 or pos >= len(block):
        return -1
    value = block[pos] & 0x7F
    if value < 0x7F:
        start = pos + 1
    else:
        value = 0x7F
        shift = 0
        pos += 1
        end = len(block)
        while True:
            if pos >= end or shift > 28:
                return -1
            byte = block[pos]
            value += (byte & 0x7F) << shift
            shift += 7
            pos += 1
            if not byte & 0x80:
                break
        start = pos
    stop = start + value
    return stop if stop <= len(block) else -1


class MemoDecoder:
    """An `hpack.Decoder` with the memo: `decode(block, raw=True)` as the library's.

    The memo also remembers which of its blocks made a request that passed the field
    scans of headers.py (`mark_checked`): `hit` says, after each `decode`, whether the
    block came from the memo and was marked so; its fields need no scan again. A mark
    names the memo's `generation` the scanned list was decoded in: the blocks of one
    read are all decoded before any request is scanned, so the memo may have been
    emptied and the same bytes decoded to other fields meanwhile (a block in between
    changed the table); such a mark is refused."""

    def __init__(self, max_header_list_size: int) -> None:
        self.decoder = Decoder(max_header_list_size=max_header_list_size)
        self.memo: dict[bytes, list[Any]] = {}
        self.checked: set[bytes] = set()  # memo keys whose fields passed the scans
        self.hit = False
        self.generation = 0  # counts the times the memo was emptied

    def decode(self, data: bytes, raw: bool = True) -> list[Any]:
        memo = self.memo
        known = memo.get(data) if raw else None
        if known is not None:
            # stored when it could not change the table, which has not changed since:
            # each caller gets its own list, the memo keeps an untouched one
            self.hit = data in self.checked
            return list(known)
        self.hit = False
        headers = list(self.decoder.decode(data, raw=raw))
        if changes_table(data):
            # the same bytes may mean other fields from now on
            self.generation += 1
            if memo:
                memo.clear()
                self.checked.clear()
        elif raw and len(memo) < _MEMO_SIZE:
            memo[data] = list(headers)
        return headers

    def mark_checked(self, data: bytes, generation: int) -> None:
        """The request of block `data`, decoded in memo `generation`, passed the field
        scans."""
        if generation == self.generation and data in self.memo:
            self.checked.add(data)
