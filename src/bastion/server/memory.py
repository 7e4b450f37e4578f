"""Giving memory back to the system after a burst of closed connections.

Thousands of connections closing together free their buffers (OpenSSL's, the TLS
layer's 256 KiB read buffer, the parsers') in the middle of the C heap, where glibc
keeps the pages: the process stays at its peak size. `malloc_trim(0)` hands whole
free pages back, after a full garbage collection has freed the closed connections that
are still in reference cycles. Both walk the heap (milliseconds, more on a large heap), so
they run only when the number of open connections fell by `TRIM_AFTER` since its peak,
never on the steady churn of a busy gateway, and at most once every
`MIN_TRIM_INTERVAL` seconds: a client that opens and closes a thousand connections
over and over must not make the worker stall its event loop over and over. A trim due
sooner waits for the interval to be over (the fall is remembered), so the memory of a
real burst still goes back, just later. Without glibc only the collection runs.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("bastion.server")

# connections closed since the last peak before the heap is trimmed
TRIM_AFTER = 1000
# Seconds between two trims. Both walks take milliseconds to tens of milliseconds on
# a large heap: once in 30 s keeps that under 0.2% of the loop's time even when a
# client provokes it on purpose, and a burst's memory still goes back within 30 s.
MIN_TRIM_INTERVAL = 30.0


def _load_trim() -> Callable[[], None] | None:
    # ctypes is imported here, at the first trim: a worker that never sees a burst of
    # closes does not carry it
    import ctypes
    import ctypes.util

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
    one trim gets all of it), and not again before MIN_TRIM_INTERVAL has passed."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._trim: Callable[[], None] | None = None
        self._trim_loaded = False
        self._clock = clock
        self.peak = 0
        self.last = 0
        self.trimmed_at = float("-inf")  # the first trim may come at once

    def observe(self, open_connections: int) -> None:
        falling = open_connections < self.last
        self.last = open_connections
        if open_connections >= self.peak:
            self.peak = open_connections
        elif self.peak - open_connections >= TRIM_AFTER and not falling:
            now = self._clock()
            if now - self.trimmed_at < MIN_TRIM_INTERVAL:
                return  # too soon: the peak is kept, so the trim comes once it is time
            closed = self.peak - open_connections
            self.peak = open_connections
            self.trimmed_at = now
            self.trim(closed)

    def trim(self, closed: int) -> None:
        started = time.perf_counter()
        # whatever closed connections left in reference cycles is freed first, or its
        # memory stays (a connection and its parser no longer form one: they let go of
        # each other at `connection_lost`)
        gc.collect()
        if not self._trim_loaded:
            self._trim, self._trim_loaded = _load_trim(), True
        if self._trim is not None:
            self._trim()
        log.debug(
            "%d connections closed: heap collected and trimmed in %.1f ms",
            closed,
            (time.perf_counter() - started) * 1000,
        )
