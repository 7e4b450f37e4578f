"""The balancing state of one upstream endpoint, shared by every route that uses it.

An `Endpoint` lives as long as its connection pool (`Pool.endpoint`), so a reload
that keeps an endpoint keeps its health, latency estimate and counters.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections import deque
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from bastion.proxy.pool import Pool

# Bumped whenever an endpoint becomes usable or unusable, so that balancers rebuild
# their candidate lists on the next pick instead of checking every endpoint per request.
EPOCH: Final = [0]

# Time constant of the latency average: a sample older than this weighs 1/e as much.
EWMA_DECAY: Final = 3.0
# Latency assumed before the first sample (seconds): small, so new endpoints get traffic.
EWMA_START: Final = 0.001


def changed() -> None:
    EPOCH[0] += 1


class Endpoint:
    __slots__ = (
        "checker",
        "eject_streak",
        "ejected_until",
        "ejections",
        "ewma",
        "ewma_at",
        "failures",
        "health_config",
        "healthy",
        "id",
        "inflight",
        "label",
        "pool",
        "requests",
        "up_since",
        "waiters",
    )

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.label = pool.label
        # opaque and stable across restarts and workers: names the endpoint in cookies
        self.id = hashlib.sha256(pool.label.encode()).hexdigest()[:16]
        self.inflight = 0
        self.requests = 0
        self.ewma = EWMA_START
        self.ewma_at = 0.0
        self.healthy = True  # active checks; optimistic until a check says otherwise
        self.failures = 0  # consecutive passive failures
        self.ejected_until = 0.0
        self.ejections = 0
        self.eject_streak = 0
        self.up_since = 0.0  # when it last became usable again (slow start)
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.checker: Any = None
        self.health_config: Any = None

    # ---------------------------------------------------------------- latency
    def observe(self, seconds: float, now: float) -> None:
        """Peak-sensitive, time-decayed average: a slower sample is taken at once (an
        endpoint turning slow is avoided quickly), a faster one is blended in with a
        weight that grows with the time since the last sample."""
        if self.ewma_at == 0.0 or seconds > self.ewma:
            self.ewma = seconds
        else:
            keep = math.exp(-(now - self.ewma_at) / EWMA_DECAY)
            self.ewma = self.ewma * keep + seconds * (1.0 - keep)
        self.ewma_at = now

    def latency(self, now: float) -> float:
        """The estimate as a cost: one that got no sample for a while fades toward zero,
        so an endpoint avoided for being slow is eventually tried again by a real
        request (its answer then resets the estimate) even without health checks."""
        age = now - self.ewma_at
        if age < EWMA_DECAY:
            return self.ewma
        return self.ewma * math.exp(-(age - EWMA_DECAY) / EWMA_DECAY)

    # ------------------------------------------------------------------ state
    def usable(self, now: float) -> bool:
        return self.healthy and self.ejected_until <= now and not self.pool.retired

    def set_healthy(self, healthy: bool, now: float) -> None:
        if healthy == self.healthy:
            return
        self.healthy = healthy
        if healthy:
            self.up_since = now
            self.failures = 0
        changed()

    def eject(self, now: float, base: float) -> None:
        if self.ejected_until and now - self.ejected_until > 4 * base:
            self.eject_streak = 0  # well since the last ejection: start over at `base`
        self.eject_streak = min(self.eject_streak + 1, 4)
        # back-off: 1x, 2x, 4x, 8x the configured time (capped) while it keeps failing
        self.ejected_until = now + base * (1 << (self.eject_streak - 1))
        self.ejections += 1
        self.failures = 0
        self.up_since = self.ejected_until
        changed()

    # ---------------------------------------------------------- connections
    def release_slot(self) -> None:
        """One request finished: wake a request waiting for a connection, if any."""
        self.inflight -= 1
        waiters = self.waiters
        while waiters:  # empty unless max_pending lets requests wait
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def retire(self) -> None:
        if self.checker is not None:
            self.checker.cancel()
            self.checker = None
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        changed()

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "ejected": self.ejected_until > now,
            "ejected_for": round(max(0.0, self.ejected_until - now), 1),
            "ewma_ms": round(self.ewma * 1000, 2),
            "in_flight": self.inflight,
            "requests": self.requests,
            "ejections": self.ejections,
            "failures": self.failures,
        }


def endpoint_of(pool: Pool) -> Endpoint:
    endpoint = pool.endpoint
    if endpoint is None:
        endpoint = pool.endpoint = Endpoint(pool)
    return endpoint
