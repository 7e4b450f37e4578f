"""GCRA and quota counters of the in-process limit store, and their file."""

from __future__ import annotations

import calendar
import json
import time
from pathlib import Path

import pytest

from bastion.state.limits import Check, MemoryLimitStore, quota_window
from bastion.state.persist import PersistentStore

T0 = calendar.timegm((2026, 3, 31, 23, 59, 0))


def gcra(key: str = "k", count: int = 10, period: float = 1.0, burst: int = 20) -> Check:
    return Check(key, count, period, burst)


def quota(key: str = "q", limit: int = 3, per: str = "day") -> Check:
    return Check(key, limit, 86400.0, 0, per, True)


def test_burst_passes_at_once_then_one_per_interval() -> None:
    store = MemoryLimitStore()
    allowed = [store.take([gcra()], T0)[0].allowed for _ in range(25)]
    assert allowed == [True] * 20 + [False] * 5
    # one emission interval (0.1 s) later exactly one more passes
    assert store.take([gcra()], T0 + 0.1)[0].allowed
    assert not store.take([gcra()], T0 + 0.1)[0].allowed


def test_boundary_is_exact() -> None:
    store = MemoryLimitStore()
    for _ in range(3):
        assert store.take([gcra(count=3, period=3.0, burst=3)], T0)[0].allowed
    refused = store.take([gcra(count=3, period=3.0, burst=3)], T0)[0]
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(1.0)
    assert not store.take([gcra(count=3, period=3.0, burst=3)], T0 + 0.999)[0].allowed
    assert store.take([gcra(count=3, period=3.0, burst=3)], T0 + 1.0)[0].allowed


def test_remaining_counts_down() -> None:
    store = MemoryLimitStore()
    check = gcra(count=3, period=3.0, burst=3)
    remaining = [store.take([check], T0)[0].remaining for _ in range(4)]
    assert remaining == [2, 1, 0, 0]


def test_refusal_consumes_nothing_from_other_limits() -> None:
    store = MemoryLimitStore()
    checks = [gcra("fast", count=1, period=1.0, burst=1), quota("day", limit=5)]
    assert all(o.allowed for o in store.take(checks, T0))
    for _ in range(10):
        assert not store.take(checks, T0)[0].allowed  # the per-second limit refuses...
    # ...and the day quota was not eaten by the refused requests: 4 left
    outcomes = store.take(checks, T0 + 1.0)
    assert outcomes[1].allowed and outcomes[1].remaining == 3


def test_quota_starts_again_with_the_next_day() -> None:
    store = MemoryLimitStore()
    assert [store.take([quota()], T0)[0].allowed for _ in range(4)] == [True] * 3 + [False]
    refused = store.take([quota()], T0)[0]
    assert refused.retry_after == pytest.approx(60.0)  # midnight UTC
    assert store.take([quota()], T0 + 60.0)[0].allowed


def test_calendar_windows() -> None:
    day = quota_window("day", T0)
    assert day[2] - day[1] == 86400 and day[1] <= T0 < day[2]
    month = quota_window("month", T0)
    assert month[2] - month[1] == 31 * 86400
    assert quota_window("month", T0 + 60.0)[0] != month[0]  # 1 April


def test_idle_keys_are_forgotten() -> None:
    store = MemoryLimitStore(sweep_every=1.0)
    for i in range(1000):
        store.take([gcra(f"ip{i}")], T0)
    assert len(store) == 1000
    store.take([gcra("late")], T0 + 5.0)  # every bucket above is whole again
    assert len(store) == 1


def test_memory_is_bounded() -> None:
    store = MemoryLimitStore(max_keys=100, sweep_every=3600.0)
    for i in range(1000):
        store.take([gcra(f"ip{i}", count=1, period=3600.0, burst=1)], T0 + i * 0.001)
    assert len(store) <= 101


def test_counters_survive_in_the_file(tmp_path: Path) -> None:
    store = PersistentStore(tmp_path)
    day = quota("consumer=alice", limit=2)
    long = Check("hourly", 1, 3600.0, 1, None, True)
    short = gcra("per-second")
    now = time.time()  # the file is read back against the clock
    store.take([day, long, short], now)
    store.save_now()
    saved = json.loads((tmp_path / "ratelimit.json").read_text())
    assert "per-second" not in saved["tat"]  # short windows are not worth saving
    assert (tmp_path / "ratelimit.json").stat().st_mode & 0o777 == 0o600

    again = PersistentStore(tmp_path)
    outcomes = again.take([day, long], now + 1)
    assert not outcomes[1].allowed  # the hourly limit is still spent
    assert again.take([day], now + 1)[0].remaining == 0  # one of two used before


def test_a_broken_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "ratelimit.json").write_text("{not json")
    store = PersistentStore(tmp_path)
    assert store.take([quota()], T0)[0].allowed
