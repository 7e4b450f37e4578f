"""Rate-limit and quota counters: the store interface and the in-process store.

A request is checked against all its route's limits in ONE call (`LimitStore.take`), which
either consumes one unit from every limit or from none: a refused request must not eat a
day's quota, and a Redis store can do the same atomically in one script.

Rate limits use GCRA (the generic cell rate algorithm): per key, one float, the theoretical
arrival time (TAT) of the next request. With an emission interval ``T = period / count`` and
a tolerance ``tau = (burst - 1) * T``, a request at ``now`` is allowed when
``max(TAT, now) - now <= tau``, and then ``TAT = max(TAT, now) + T``. This is exact: ``burst``
requests pass at once on an idle key, then one every ``T``.

Quotas count requests per calendar day or month (UTC) and start again at its beginning.

Times are wall-clock seconds (``time.time()``) so that a saved TAT means the same after a
restart.
"""

from __future__ import annotations

import calendar
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Check", "LimitStore", "MemoryLimitStore", "Outcome", "quota_window"]


@dataclass(frozen=True, slots=True)
class Check:
    """One limit to apply: a GCRA bucket (``per`` is None) or a calendar quota."""

    key: str  # the store key: the limit's identity and the counted value
    count: int  # requests per period (GCRA) or per calendar period (quota)
    period: float  # seconds (GCRA); the current calendar period's length (quota)
    burst: int = 0  # GCRA only
    per: str | None = None  # "day" or "month" for a quota
    persist: bool = False  # survives a restart (long windows and quotas)


@dataclass(slots=True)
class Outcome:
    """The store's answer for one check."""

    allowed: bool
    remaining: int  # units left after this request (0 when refused)
    reset: float  # seconds until the limit is whole again (GCRA) or the period ends (quota)
    retry_after: float  # seconds until one more request would pass; 0 when allowed


class LimitStore(Protocol):
    """Where counters live. ``take`` consumes one unit of every check, or none when any of
    them refuses. A cluster store (Redis) does it in one atomic script and sets
    ``is_async`` (its ``take`` is then a coroutine function)."""

    is_async: bool

    def take(self, checks: Sequence[Check], now: float) -> list[Outcome]: ...


def quota_window(per: str, now: float) -> tuple[int, float, float]:
    """The calendar period containing ``now``: (its id, its start, its end), in UTC."""
    t = time.gmtime(now)
    if per == "day":
        start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
        return t.tm_year * 10000 + t.tm_mon * 100 + t.tm_mday, start, start + 86400.0
    start = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0))
    days = calendar.monthrange(t.tm_year, t.tm_mon)[1]
    return t.tm_year * 100 + t.tm_mon, start, start + days * 86400.0


class MemoryLimitStore:
    """Counters in this process: exact for one worker. Idle keys are forgotten (a GCRA key
    whose TAT has passed is the same as a fresh one; a quota key of a past period is zero),
    and the table is bounded by ``max_keys``."""

    is_async = False

    def __init__(self, max_keys: int = 1_000_000, sweep_every: float = 10.0) -> None:
        self.tat: dict[str, float] = {}  # GCRA
        self.quota: dict[str, tuple[int, int]] = {}  # quota: (period id, count)
        self.persistent: set[str] = set()  # keys that are saved (long windows, quotas)
        self.max_keys = max_keys
        self.sweep_every = sweep_every
        self.next_sweep = 0.0
        self.dirty = False

    def __len__(self) -> int:
        return len(self.tat) + len(self.quota)

    def take(self, checks: Sequence[Check], now: float) -> list[Outcome]:
        if now >= self.next_sweep or len(self) > self.max_keys:
            self.sweep(now)
        outcomes: list[Outcome] = []
        new_tats: list[float] = []
        refused = False
        for check in checks:
            if check.per is None:
                interval = check.period / check.count
                tau = (check.burst - 1) * interval
                tat = max(self.tat.get(check.key, now), now)
                new_tat = tat + interval
                if new_tat - now > tau + interval + 1e-9:
                    wait = tat - tau - now
                    outcomes.append(Outcome(False, 0, tat - now, wait))
                    refused = True
                else:
                    left = math.floor((now + tau - new_tat) / interval + 1e-9) + 1
                    wait = 0.0 if left > 0 else new_tat - tau - now
                    outcomes.append(Outcome(True, left, new_tat - now, wait))
                new_tats.append(new_tat)
            else:
                window, _, end = quota_window(check.per, now)
                seen, used = self.quota.get(check.key, (window, 0))
                if seen != window:
                    used = 0
                if used >= check.count:
                    outcomes.append(Outcome(False, 0, end - now, end - now))
                    refused = True
                else:
                    outcomes.append(Outcome(True, check.count - used - 1, end - now, 0.0))
                new_tats.append(float(used + 1))
        if refused:
            for outcome in outcomes:
                if outcome.allowed:
                    # nothing is consumed: report what was left before this request
                    outcome.allowed = False
                    outcome.remaining += 1
            return outcomes
        for check, value in zip(checks, new_tats, strict=True):
            if check.per is None:
                self.tat[check.key] = value
            else:
                self.quota[check.key] = (quota_window(check.per, now)[0], int(value))
            if check.persist:
                self.persistent.add(check.key)
                self.dirty = True
        return outcomes

    def sweep(self, now: float) -> None:
        """Forget idle keys; when still over ``max_keys``, the ones closest to being idle."""
        self.next_sweep = now + self.sweep_every
        self.tat = {k: v for k, v in self.tat.items() if v > now}
        day, month = quota_window("day", now)[0], quota_window("month", now)[0]
        self.quota = {k: v for k, v in self.quota.items() if v[0] in (day, month)}
        over = len(self) - self.max_keys
        if over > 0:
            # a GCRA key about to be idle loses the least when forgotten
            for key in sorted(self.tat, key=self.tat.__getitem__)[: over + self.max_keys // 10]:
                del self.tat[key]
        self.persistent &= self.tat.keys() | self.quota.keys()

    # ------------------------------------------------------------ persistence
    def snapshot(self, now: float) -> dict[str, object]:
        """The persistent counters still in force, as JSON-ready data."""
        self.dirty = False
        return {
            "version": 1,
            "saved": now,
            "tat": {k: v for k, v in self.tat.items() if k in self.persistent and v > now},
            "quota": {k: list(v) for k, v in self.quota.items() if k in self.persistent},
        }

    def restore(self, data: object, now: float) -> int:
        """Merge saved counters (from `snapshot`); returns how many were taken."""
        if not isinstance(data, dict) or data.get("version") != 1:
            return 0
        taken = 0
        tats = data.get("tat")
        if isinstance(tats, dict):
            for key, value in tats.items():
                if isinstance(key, str) and isinstance(value, int | float) and value > now:
                    self.tat[key] = max(float(value), self.tat.get(key, 0.0))
                    self.persistent.add(key)
                    taken += 1
        quotas = data.get("quota")
        if isinstance(quotas, dict):
            for key, value in quotas.items():
                if (
                    isinstance(key, str)
                    and isinstance(value, list)
                    and len(value) == 2
                    and all(isinstance(v, int) for v in value)
                ):
                    window, used = self.quota.get(key, (value[0], 0))
                    self.quota[key] = (
                        value[0],
                        max(used, value[1]) if window == value[0] else value[1],
                    )
                    self.persistent.add(key)
                    taken += 1
        return taken
