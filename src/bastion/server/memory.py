"""Giving memory back to the system after a burst of closed connections.

Thousands of connections closing together free their buffers (OpenSSL's, the TLS
layer's 256 KiB read buffer, the parsers') in the middle of the C heap, where glibc
keeps the pages: the process stays at its peak size. `malloc_trim(0)` hands whole
free pages back, after a full garbage collection has freed the closed connections that
are still in reference cycles. Both walk the heap (milliseconds, more on a large heap), so
they run only when the number of open connections fell by `TRIM_AFTER` since its peak,
never on the steady churn of a busy gateway. Without glibc only the collection runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("bastion.server")

# connections closed since the last peak before the heap is trimmed
TRIM_AFTER = 1000


def _load_trim() -> Callable[[], None] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc (musl, macOS): nothing to call
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class HeapTrimmer:
    """Told the number of open connections once a second; trims once a fall of at
    least TRIM_AFTER since the last peak has stopped (the burst of closes is over, so
    one trim gets all of it)."""

    def __init__(self) -> None:
        self._trim = _load_trim()
        self.peak = 0
        self.last = 0

    def observe(self, open_connections: int) -> None:
        falling = open_connections < self.last
        self.last = open_connections
        if open_connections >= self.peak:
            self.peak = open_connections
        elif self.peak - open_connections >= TRIM_AFTER and not falling:
            closed = self.peak - open_connections
            self.peak = open_connections
            self.trim(closed)

    def trim(self, closed: int) -> None:
        started = time.perf_counter()
        # closed connections still in reference cycles (a protocol and its parser
        # refer to each other) are freed first, or their memory stays
        gc.collect()
        if self._trim is not None:
            self._trim()
        log.debug(
            "%d connections closed: heap collected and trimmed in %.1f ms",
            closed,
            (time.perf_counter() - started) * 1000,
        )
