"""Request ids: 32 lower-case hex digits, a random per-process half and a counter half.

Unique within a worker (the counter) and across workers and restarts (the random half);
never all zero, so that an id is also a W3C trace id and its counter half a parent id
(`proxy/tracing.py`). Made once per request on the request path (compiled: setup.py's HOT),
so the counter's hex digits are not formatted each time: the counter's high digits change
once every 4,096 requests, and the last three come from a table.
"""

from __future__ import annotations

import os
from typing import Final

# the last three hex digits of every counter value, zero-padded
_LOW_DIGITS: Final = tuple(f"{n:03x}" for n in range(4096))
_LOW_MASK: Final = 0xFFF
# the counter's first value: from 2**60 its half is always 16 digits (no padding) and never
# zero (it would need 2**60 requests to reach 2**64)
_START: Final = 1 << 60


class RequestIds:
    """The ids of one process: `next()` names a request."""

    def __init__(self, start: int = _START) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = start  # the last one given (the first id is `start + 1`)
        self.high = self._high()  # the prefix and the counter's digits but the last three

    def _high(self) -> str:
        return self.prefix + hex(self.counter >> 12)[2:]

    def next(self) -> str:
        self.counter += 1
        low = self.counter & _LOW_MASK
        if not low:
            self.high = self._high()
        return self.high + _LOW_DIGITS[low]
