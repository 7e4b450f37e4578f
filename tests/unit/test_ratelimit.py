"""GCRA and quota counters of the in-process limit store, and their file."""

from __future__ import annotations

import calendar
import json
import time
from pathlib import Path

import pytest

from bastion.state.limits import SWEEP_SLICE, Check, MemoryLimitStore, Outcome, quota_window
from bastion.state.persist import PersistentStore

T0 = calendar.timegm((2026, 3, 31, 23, 59, 0))

Limit = tuple[Check, str]


def gcra(key: str = "k", count: int = 10, period: float = 1.0, burst: int = 20) -> Limit:
    return Check(count, period, burst), key


def quota(key: str = "q", limit: int = 3, per: str = "day") -> Limit:
    return Check(limit, 0.0, 0, per, True), key


def take(store: MemoryLimitStore, now: float, *limits: Limit) -> list[Outcome] | None:
    """The outcomes of a refusal, None when the request passes."""
    allowed, outcomes = store.take([c for c, _ in limits], [k for _, k in limits], now)
    assert allowed == (outcomes is None)
    return outcomes


def passes(store: MemoryLimitStore, now: float, *limits: Limit) -> bool:
    return take(store, now, *limits) is None


def test_what_is_left_is_reported_on_request() -> None:
    store = MemoryLimitStore()
    check, day = Check(3, 3.0, 3), Check(5, 0.0, 0, "day", True)
    left = []
    for _ in range(3):
        allowed, outcomes = store.take([check, day], ["k", "d"], T0, report=True)
        assert allowed and outcomes is not None
        left.append((outcomes[0].remaining, outcomes[1].remaining))
    assert left == [(2, 4), (1, 3), (0, 2)]
    assert outcomes[0].retry_after == pytest.approx(1.0)  # when the next one may come


def test_burst_passes_at_once_then_one_per_interval() -> None:
    store = MemoryLimitStore()
    allowed = [passes(store, T0, gcra()) for _ in range(25)]
    assert allowed == [True] * 20 + [False] * 5
    # one emission interval (0.1 s) later exactly one more passes
    assert passes(store, T0 + 0.1, gcra())
    assert not passes(store, T0 + 0.1, gcra())


def test_boundary_is_exact() -> None:
    store = MemoryLimitStore()
    limit = gcra(count=3, period=3.0, burst=3)
    assert [passes(store, T0, limit) for _ in range(3)] == [True] * 3
    refused = take(store, T0, limit)
    assert refused is not None and not refused[0].allowed
    assert refused[0].retry_after == pytest.approx(1.0)
    assert refused[0].remaining == 0
    assert not passes(store, T0 + 0.999, limit)
    assert passes(store, T0 + 1.0, limit)


def test_refusal_consumes_nothing_from_other_limits() -> None:
    store = MemoryLimitStore()
    fast, day = gcra("fast", count=1, period=1.0, burst=1), quota("day", limit=5)
    assert passes(store, T0, fast, day)
    for _ in range(10):
        refused = take(store, T0, fast, day)  # the per-second limit refuses...
        assert refused is not None and not refused[0].allowed
    # ...and the day quota was not eaten by the refused requests: 4 left
    assert refused[1].allowed and refused[1].remaining == 4
    assert passes(store, T0 + 1.0, fast, day)


def test_quota_starts_again_with_the_next_day() -> None:
    store = MemoryLimitStore()
    assert [passes(store, T0, quota()) for _ in range(4)] == [True] * 3 + [False]
    refused = take(store, T0, quota())
    assert refused is not None and refused[0].retry_after == pytest.approx(60.0)  # midnight
    assert passes(store, T0 + 60.0, quota())


def test_calendar_windows() -> None:
    day = quota_window("day", T0)
    assert day[2] - day[1] == 86400 and day[1] <= T0 < day[2]
    month = quota_window("month", T0)
    assert month[2] - month[1] == 31 * 86400
    assert quota_window("month", T0 + 60.0)[0] != month[0]  # 1 April


def test_idle_keys_are_forgotten() -> None:
    store = MemoryLimitStore(sweep_every=1.0)
    for i in range(SWEEP_SLICE - 1):
        take(store, T0, gcra(f"ip{i}"))
    assert len(store) == SWEEP_SLICE - 1
    take(store, T0 + 5.0, gcra("late"))  # every bucket above is whole again
    assert len(store) == 1


def test_a_large_table_is_swept_a_slice_per_request() -> None:
    """Idle keys are forgotten across the requests that follow the sweep's time, a slice
    each (the event loop is never held for the whole table); busy keys and keys new
    since the sweep began stay."""
    store = MemoryLimitStore(sweep_every=10.0)
    for i in range(5 * SWEEP_SLICE):
        take(store, T0, gcra(f"ip{i}"), quota(f"q{i}", limit=9, per="day"))
    take(store, T0, gcra("busy", count=1, period=7 * 86400.0, burst=1))
    # the next day: every GCRA bucket but "busy" is whole, every quota of yesterday over
    day = T0 + 86400.0
    sizes = []
    for n in range(30):
        take(store, day, gcra(f"new{n}"))
        sizes.append(len(store))
    assert sizes[0] == 10 * SWEEP_SLICE + 1 - SWEEP_SLICE + 1  # one slice looked at
    assert sizes[1] == sizes[0] - SWEEP_SLICE + 1  # the next slice, and one new key
    assert set(store.tat) == {"busy", *(f"new{n}" for n in range(30))}
    assert not store.quota


def test_memory_is_bounded() -> None:
    store = MemoryLimitStore(max_keys=100, sweep_every=3600.0)
    for i in range(1000):
        take(store, T0 + i * 0.001, gcra(f"ip{i}", count=1, period=3600.0, burst=1))
    assert len(store) <= 101


def test_counters_survive_in_the_file(tmp_path: Path) -> None:
    store = PersistentStore(tmp_path)
    day = quota("consumer=alice", limit=2)
    hourly = (Check(1, 3600.0, 1, None, True), "hourly")
    short = gcra("per-second")
    now = time.time()  # the file is read back against the clock
    assert passes(store, now, day, hourly, short)
    store.save_now()
    saved = json.loads((tmp_path / "ratelimit.json").read_text())
    assert "per-second" not in saved["tat"]  # short windows are not worth saving
    assert (tmp_path / "ratelimit.json").stat().st_mode & 0o777 == 0o600

    again = PersistentStore(tmp_path)
    refused = take(again, now + 1, day, hourly)
    assert refused is not None
    assert not refused[1].allowed  # the hourly limit is still spent
    assert refused[0].remaining == 1  # one of the two a day was used before


def test_a_broken_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "ratelimit.json").write_text("{not json")
    store = PersistentStore(tmp_path)
    assert passes(store, T0, quota())


def test_an_unwritable_data_dir_is_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    store = PersistentStore(blocker)
    limit = (Check(100, 86400.0, 100, None, True), "daily")
    for _ in range(3):
        assert passes(store, time.time(), limit)  # counting goes on
        store.save_now()
    warnings = [r for r in caplog.records if "cannot save rate-limit counters" in r.message]
    assert len(warnings) == 1


def test_an_idle_key_always_admits_one_whatever_the_clock_rounding() -> None:
    # 10 per 7 s with no burst: now + 0.7 - now rounds above 0.7 at today's clock, which
    # once refused every request of such a limit
    store = MemoryLimitStore()
    limit = gcra(count=10, period=7.0, burst=1)
    now = at = time.time()
    allowed = []
    for _ in range(5):
        allowed.append(passes(store, at, limit))
        at += 0.7  # one every emission interval
    assert allowed == [True] * 5
    assert not passes(store, at - 0.7, limit)
    check, key = limit
    fresh = MemoryLimitStore()
    assert fresh.take_rate(check, key, now) > 0  # the fast path says the same
    assert fresh.take_rate(check, key, now) == 0.0


def test_quota_keys_are_bounded_too() -> None:
    """A flood of new quota keys (one per client address or header value) is bounded
    like GCRA keys; the keys that counted the fewest requests go first."""
    store = MemoryLimitStore(max_keys=100, sweep_every=3600.0)
    for _ in range(3):
        assert passes(store, T0, quota("busy", limit=10))
    for i in range(1000):
        assert passes(store, T0 + i * 0.001, quota(f"ip{i}", limit=10))
    assert len(store) <= 101
    assert store.quota["busy"][1] == 3


def test_workers_sharing_the_file_keep_each_others_counters(tmp_path: Path) -> None:
    first, second = PersistentStore(tmp_path), PersistentStore(tmp_path)
    now = time.time()
    assert passes(first, now, quota("alice", limit=5))
    first.save_now()
    assert passes(second, now, quota("bob", limit=5))
    second.save_now()  # reads the first worker's file back: both are kept
    assert passes(first, now, quota("alice", limit=5))
    first.save_now()  # the file is no longer its own: read back again
    saved = json.loads((tmp_path / "ratelimit.json").read_text())["quota"]
    assert {key: used for key, (_, used) in saved.items()} == {"alice": 2, "bob": 1}


def test_a_large_table_is_saved_whole(tmp_path: Path) -> None:
    """Saved in slices (so that the event loop is not held): all of it reads back."""
    store = PersistentStore(tmp_path)
    now = time.time()
    for i in range(45_000):
        store.take([quota()[0]], [f'tenant "{i}"'], now)
    store.save_now()
    again = PersistentStore(tmp_path)
    assert len(again) == 45_000
    assert again.quota['tenant "44999"'][1] == 1


def test_saves_are_spaced_by_what_the_last_one_cost(tmp_path: Path) -> None:
    store = PersistentStore(tmp_path)
    store.last_duration = 10.0  # a large table took 10 s to save
    now = time.time()
    assert passes(store, now, quota("alice"))
    store.take_and_save(now)
    assert store.next_save == now + 200.0  # 20 times the cost: at most 5% of the time
