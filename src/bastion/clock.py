"""The clock, injected rather than read from `time` directly, so the logic that depends on
it (cache freshness, rate limits, key expiry, JWKS refresh, health) can be tested by moving
a clock instead of sleeping."""

from __future__ import annotations

import time as _time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch: ages, expiry dates, HTTP dates."""
        ...

    def monotonic(self) -> float:
        """Seconds that never go back: durations, intervals, token buckets."""
        ...


class SystemClock:
    """The real clock: the `time` module's functions, with no indirection per call."""

    time = staticmethod(_time.time)
    monotonic = staticmethod(_time.monotonic)


SYSTEM_CLOCK: Clock = SystemClock()


class ManualClock:
    """A clock that moves only when told: for tests, and for replaying logic."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.mono = 1000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.mono += seconds
