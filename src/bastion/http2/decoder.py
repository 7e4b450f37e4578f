"""HPACK decoding with a small per-connection memo of repeated header blocks.

A client sending the same request again (an API poller, a page's many requests
for the same kind of resource, a load generator) usually encodes it as a run of
one-byte indexed fields: references into the static table and into the dynamic
table entries the earlier request inserted. Such a block cannot change the
dynamic table, so while the table is unchanged the same bytes decode to the same
list. The `hpack` decoder (pure Python) is still used for every other block, and
any block that may change the table (a literal, a size update, a multi-byte index)
empties the memo first.
"""

from __future__ import annotations

import re
from typing import Any

from hpack import Decoder

# A byte that is not a one-byte "indexed field" (0x81-0xfe; 0x80 is index 0, an
# error, and 0xff starts a multi-byte index). A block without one is all references.
_NOT_INDEXED = re.compile(rb"[\x00-\x80\xff]")
_MEMO_SIZE = 32  # distinct blocks remembered per connection


class MemoDecoder(Decoder):
    """Stands in for `hpack.Decoder` on an `H2Connection` (attribute `decoder`)."""

    def __init__(self, max_header_list_size: int) -> None:
        super().__init__(max_header_list_size=max_header_list_size)
        self._memo: dict[bytes, list[Any]] = {}

    def decode(self, data: bytes, raw: bool = False) -> Any:
        memo = self._memo
        if _NOT_INDEXED.search(data) is not None:
            if memo:
                memo.clear()
            return super().decode(data, raw)
        known = memo.get(data)
        if known is None:
            known = list(super().decode(data, raw))
            if len(memo) < _MEMO_SIZE:
                memo[data] = known
        # each caller gets its own list: the memo keeps an untouched one
        return list(known)
