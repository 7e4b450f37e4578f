"""Rate-limit and quota counters: the store interface and the in-process store.

A request is checked against all its route's limits in ONE call (`LimitStore.take`), which
either consumes one unit from every limit or from none: a refused request must not eat a
day's quota, and a Redis store can do the same atomically in one script.

Rate limits use GCRA (the generic cell rate algorithm): per key, one float, the theoretical
arrival time (TAT) of the next request. With an emission interval ``T = period / count`` and
a tolerance ``tau = (burst - 1) * T``, a request at ``now`` is allowed when
``max(TAT, now) - now <= tau``, and then ``TAT = max(TAT, now) + T``. This is exact: ``burst``
requests pass at once on an idle key, then one every ``T``. An idle key (``TAT <= now``) always
admits its request: comparing ``now + T - now`` with ``T`` instead would let the rounding of
``now`` (about 1e-7 s at today's clock) refuse it when ``burst`` is 1.

Quotas count requests per calendar day or month (UTC) and start again at its beginning.

Times are wall-clock seconds (the store's clock's ``time()``) so that a saved TAT means the
same after a restart. Callers read ``now`` from ``store.clock`` and pass it in: a request
takes the time once for all its limits, and a test moves a `ManualClock` instead of sleeping.
"""

from __future__ import annotations

import calendar
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Final, Protocol, TypeAlias

from mypy_extensions import mypyc_attr

from bastion.clock import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    from typing_extensions import TypeIs  # (typing has it from Python 3.13)

SWEEP_SLICE: Final = 500
"""Keys a request looks at while a sweep of idle keys is under way (see `sweep_some`)."""

Counters = tuple[dict[str, float], dict[str, tuple[int, int]], set[str]]
"""A copy of a `MemoryLimitStore`'s counters: GCRA TATs, quota counts, the saved keys."""

__all__ = [
    "Check",
    "LimitStore",
    "MemoryLimitStore",
    "Outcome",
    "SharedLimitStore",
    "StoreUnavailable",
    "is_shared",
    "quota_window",
]


class Check:
    """One limit, fixed when the plan is compiled: a GCRA bucket (``per`` is None) or a
    calendar quota (``per`` is "day" or "month")."""

    __slots__ = ("ahead", "burst", "count", "interval", "per", "period", "persist", "tau")

    def __init__(
        self,
        count: int,
        period: float,
        burst: int = 0,
        per: str | None = None,
        persist: bool = False,
    ) -> None:
        self.count = count  # requests per period (GCRA) or per calendar period (quota)
        self.period = period  # seconds (GCRA)
        self.burst = burst  # GCRA only
        self.per = per
        self.persist = persist  # survives a restart (long windows and quotas)
        self.interval = period / count if per is None else 0.0
        self.tau = (burst - 1) * self.interval if per is None else 0.0
        # how far ahead of now a TAT may be after this request (with a rounding margin)
        self.ahead = self.tau + self.interval + 1e-9


@dataclass(slots=True)
class Outcome:
    """The store's answer for one check."""

    allowed: bool
    remaining: int  # units left (none was consumed: the request was refused)
    reset: float  # seconds until the limit is whole again (GCRA) or the period ends (quota)
    retry_after: float  # seconds until this check would let a request pass; 0 if it would now


class StoreUnavailable(Exception):
    """A shared store could not answer: its breaker is open, or the call failed or took
    longer than its timeout. The caller applies each limit's ``on_store_down``."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("the limit store is unavailable")
        self.retry_after = retry_after  # seconds until the store is asked again


class LimitStore(Protocol):
    """Where counters live. ``take`` consumes one unit of every check, or none when any of
    them refuses. A cluster store (Redis) does it in one atomic script and sets
    ``is_async``: its ``take`` is then a coroutine function (`SharedLimitStore`)."""

    is_async: bool
    clock: Clock  # where callers read ``now`` from
    # counters changed since they were last saved (a store that saves nothing keeps False)
    dirty: bool

    def take_and_save(self, now: float) -> None:
        """Called after `take` when `dirty`: save the counters when a save is due (off the
        event loop); a store that needs no saving does nothing."""
        ...

    def close(self) -> None:
        """Save what is not saved yet (at exit)."""
        ...

    def take(
        self, checks: Sequence[Check], keys: Sequence[str], now: float, report: bool = False
    ) -> tuple[bool, list[Outcome] | None]:
        """Consume one unit of ``checks[i]`` under ``keys[i]`` for every i, or nothing.
        Returns (allowed, outcomes): when a check refuses, (False, one `Outcome` per check;
        nothing consumed); when all allow, (True, None), or with ``report`` (True, what each
        check has left after this request)."""
        ...


class SharedLimitStore(Protocol):
    """A `LimitStore` whose ``take`` is a coroutine (Redis: ``is_async`` is True). It raises
    `StoreUnavailable` when it cannot answer."""

    is_async: bool
    clock: Clock
    dirty: bool

    def take_and_save(self, now: float) -> None: ...

    def close(self) -> None: ...

    async def take(
        self, checks: Sequence[Check], keys: Sequence[str], now: float, report: bool = False
    ) -> tuple[bool, list[Outcome] | None]: ...


AnyLimitStore: TypeAlias = LimitStore | SharedLimitStore
"""What `Stores.limits` hands out: tell them apart with `is_shared`."""


def is_shared(store: AnyLimitStore) -> TypeIs[SharedLimitStore]:
    """Whether ``store``'s ``take`` must be awaited."""
    return store.is_async


def quota_window(per: str, now: float) -> tuple[int, float, float]:
    """The calendar period containing ``now``: (its id, its start, its end), in UTC."""
    t = time.gmtime(now)
    if per == "day":
        start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
        return t.tm_year * 10000 + t.tm_mon * 100 + t.tm_mday, start, start + 86400.0
    start = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0))
    days = calendar.monthrange(t.tm_year, t.tm_mon)[1]
    return t.tm_year * 100 + t.tm_mon, start, start + days * 86400.0


# compiled (setup.py); PersistentStore (state/persist.py), interpreted, derives from it
@mypyc_attr(allow_interpreted_subclasses=True)
class MemoryLimitStore:
    """Counters in this process: exact for one worker. Idle keys are forgotten (a GCRA key
    whose TAT has passed is the same as a fresh one; a quota key of a past period is zero),
    and the table is bounded by ``max_keys``."""

    is_async = False

    def __init__(
        self, max_keys: int = 1_000_000, sweep_every: float = 10.0, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.clock = clock
        # GCRA: key -> TAT (the single-limit policy renews an idle key's TAT here itself)
        self.tat: dict[str, float] = {}
        self.quota: dict[str, tuple[int, int]] = {}  # quota: (period id, count)
        self.persistent: set[str] = set()  # keys that are saved (long windows, quotas)
        self.max_keys = max_keys
        self.sweep_every = sweep_every
        self.next_sweep = 0.0
        # the sweep under way: the keys left to look at, and the current quota windows
        self._sweep: tuple[Iterator[str], Iterator[str], tuple[int, int]] | None = None
        self.dirty = False
        self.windows: dict[str, tuple[int, float, float]] = {}  # the current day and month

    def __len__(self) -> int:
        return len(self.tat) + len(self.quota)

    def take(
        self, checks: Sequence[Check], keys: Sequence[str], now: float, report: bool = False
    ) -> tuple[bool, list[Outcome] | None]:
        if len(self.tat) + len(self.quota) > self.max_keys:
            self.sweep(now)
        elif now >= self.next_sweep:
            self.sweep_some(now)
        tats, quotas = self.tat, self.quota
        values: list[float] = []
        # plain index loops: zip(strict=True) costs more than the checks themselves
        for i in range(len(checks)):
            check, key = checks[i], keys[i]
            if check.per is None:
                tat = tats.get(key, now)
                if tat > now:
                    tat += check.interval
                    if tat - now > check.ahead:
                        return False, self.state(checks, keys, now)
                else:
                    tat = now + check.interval  # idle: a whole bucket always admits one
                values.append(tat)
            else:
                window = self._window(check.per, now)[0]
                seen, used = quotas.get(key, (window, 0))
                if seen != window:
                    used = 0
                if used >= check.count:
                    return False, self.state(checks, keys, now)
                values.append(used + 1)
        outcomes: list[Outcome] | None = [] if report else None
        for i in range(len(checks)):
            check, key, value = checks[i], keys[i], values[i]
            if check.per is None:
                tats[key] = value
                if outcomes is not None:
                    # what is left after this request, as `state` would say
                    left = math.floor((now + check.tau - value) / check.interval + 1e-9) + 1
                    wait = 0.0 if left > 0 else value - check.tau - now
                    outcomes.append(Outcome(left > 0, max(left, 0), value - now, wait))
            else:
                window, _, end = self._window(check.per, now)
                quotas[key] = (window, int(value))
                if outcomes is not None:
                    left = check.count - int(value)
                    outcomes.append(Outcome(left > 0, left, end - now, 0.0 if left else end - now))
            if check.persist:
                self.persistent.add(key)
                self.dirty = True
        return True, outcomes

    def take_and_save(self, now: float) -> None:
        """Counters in memory only: nothing to save (see `PersistentStore`)."""

    def close(self) -> None:
        """Nothing to save."""

    def take_rate(self, check: Check, key: str, now: float) -> float:
        """`take` of a single GCRA check, for the policies' fast path: the key's new TAT
        when the request is allowed (and consumed), 0.0 when it is refused (nothing
        consumed). What is left follows from the TAT, as in `take`'s report."""
        # the hot path of every rate-limited request: no lists, no Outcome, no zip, and
        # a subscript rather than .get (a key is new once, then seen request after request)
        if now >= self.next_sweep:
            self.sweep_some(now)
        tats = self.tat
        try:
            tat = tats[key]
        except KeyError:
            # a new key: only then can the table outgrow its bound
            if len(tats) + len(self.quota) > self.max_keys:
                self.sweep(now)
                tats = self.tat
            tat = now
        if tat > now:
            # the same arithmetic as `take`, so that both say the same
            tat += check.interval
            if tat - now > check.ahead:
                return 0.0
        else:
            tat = now + check.interval  # idle: a whole bucket always admits one
        tats[key] = tat
        if check.persist:
            self.persistent.add(key)
            self.dirty = True
        return tat

    def _window(self, per: str, now: float) -> tuple[int, float, float]:
        window = self.windows.get(per)
        if window is None or not window[1] <= now < window[2]:
            window = self.windows[per] = quota_window(per, now)
        return window

    def state(self, checks: Sequence[Check], keys: Sequence[str], now: float) -> list[Outcome]:
        """What every check has left now, without consuming anything."""
        outcomes = []
        for i in range(len(checks)):
            check, key = checks[i], keys[i]
            if check.per is None:
                interval, tau = check.interval, check.tau
                tat = max(self.tat.get(key, now), now)
                if tat > now and tat + interval - now > check.ahead:
                    outcomes.append(Outcome(False, 0, tat - now, tat - tau - now))
                else:
                    left = math.floor((now + tau - tat) / interval + 1e-9) + 1
                    outcomes.append(Outcome(True, left, tat - now, 0.0))
            else:
                window, _, end = self._window(check.per, now)
                seen, used = self.quota.get(key, (window, 0))
                used = used if seen == window else 0
                left = max(0, check.count - used)
                outcomes.append(Outcome(left > 0, left, end - now, 0.0 if left else end - now))
        return outcomes

    def sweep_some(self, now: float) -> None:
        """Look at the next `SWEEP_SLICE` keys of the sweep under way (starting one when
        none is) and forget the idle ones; the sweep ends when every key was seen.

        Called by requests from `next_sweep` on, until the sweep is over: a sweep of the
        whole table at once holds the event loop for about 0.4 us a key (80 ms for 200,000
        keys), this costs a request about 0.2 ms at most."""
        sweep = self._sweep
        if sweep is None:
            day, month = quota_window("day", now)[0], quota_window("month", now)[0]
            # lists of the keys as they are now: the tables change while the sweep goes on
            sweep = self._sweep = (iter(list(self.tat)), iter(list(self.quota)), (day, month))
        tat_keys, quota_keys, windows = sweep
        tats, quotas, persistent = self.tat, self.quota, self.persistent
        seen = 0
        for key in islice(tat_keys, SWEEP_SLICE):
            seen += 1
            tat = tats.get(key)
            if tat is not None and tat <= now:
                del tats[key]
                persistent.discard(key)
        for key in islice(quota_keys, SWEEP_SLICE - seen):
            seen += 1
            counted = quotas.get(key)
            if counted is not None and counted[0] not in windows:
                del quotas[key]
                persistent.discard(key)
        if seen < SWEEP_SLICE:  # both lists are done
            self._sweep = None
            self.next_sweep = now + self.sweep_every

    def sweep(self, now: float) -> None:
        """Forget idle keys, all at once; when still over ``max_keys``, the ones that lose
        least (see `sweep_some` for the sweep of every few seconds)."""
        self._sweep = None
        self.next_sweep = now + self.sweep_every
        self.tat = {k: v for k, v in self.tat.items() if v > now}
        day, month = quota_window("day", now)[0], quota_window("month", now)[0]
        self.quota = {k: v for k, v in self.quota.items() if v[0] in (day, month)}
        over = len(self) - self.max_keys
        if over > 0:
            # down to 90% of the bound, so that a table at its bound is not swept again
            # at the next new key (a sweep goes over every key)
            drop = over + self.max_keys // 10
            # a GCRA key about to be idle loses the least when forgotten
            for key in sorted(self.tat, key=self.tat.__getitem__)[:drop]:
                del self.tat[key]
            drop = len(self) - self.max_keys + self.max_keys // 10
            if drop > 0:
                # then the quota keys that have counted the fewest requests
                for key in sorted(self.quota, key=lambda k: self.quota[k][1])[:drop]:
                    del self.quota[key]
        self.persistent &= self.tat.keys() | self.quota.keys()

    # ------------------------------------------------------------ persistence
    def copy(self) -> Counters:
        """The counters as they are now, for `snapshot_of` to use elsewhere: three copies
        made in C (a few ms for a million keys), so that the event loop is not held while
        a save goes over them."""
        self.dirty = False
        return self.tat.copy(), self.quota.copy(), self.persistent.copy()

    def snapshot(self, now: float) -> dict[str, object]:
        """The persistent counters still in force, as JSON-ready data."""
        return snapshot_of(self.copy(), now)

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
                    and isinstance(value, list | tuple)
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


def snapshot_of(counters: Counters, now: float) -> dict[str, object]:
    """The persistent counters of a `MemoryLimitStore.copy` still in force, as JSON-ready
    data."""
    tats, quotas, persistent = counters
    return {
        "version": 1,
        "saved": now,
        "tat": {k: v for k, v in tats.items() if v > now and k in persistent},
        # tuples as they are (JSON arrays all the same): a million new lists would also
        # bring the garbage collector over every object of the process, several times
        "quota": {k: v for k, v in quotas.items() if k in persistent},
    }
