"""When the worker gives memory back: once a fall of open connections has stopped, and
not more often than once every MIN_TRIM_INTERVAL seconds."""

from __future__ import annotations

from bastion.server.memory import MIN_TRIM_INTERVAL, TRIM_AFTER, HeapTrimmer


def _trims(counts: list[int], seconds_apart: float = MIN_TRIM_INTERVAL) -> list[int]:
    """The trims for `counts` observed `seconds_apart` (by default far enough apart that
    the interval between trims never holds one back)."""
    return [closed for _, closed in _timed_trims(counts, seconds_apart)]


def _timed_trims(counts: list[int], seconds_apart: float) -> list[tuple[float, int]]:
    now = [0.0]
    trimmer = HeapTrimmer(clock=lambda: now[0])
    done: list[tuple[float, int]] = []
    trimmer.trim = lambda closed: done.append((now[0], closed))  # type: ignore[method-assign]
    for count in counts:
        trimmer.observe(count)
        now[0] += seconds_apart
    return done


def test_a_burst_of_closes_is_trimmed_once_when_it_is_over() -> None:
    n = TRIM_AFTER * 5
    assert _trims([0, n, n, n * 3 // 5, n // 5, 10, 10, 10]) == [n - 10]


def test_steady_churn_and_small_falls_are_never_trimmed() -> None:
    small = TRIM_AFTER - 1
    assert _trims([500, 500 + small, 500, 500 + small, 500, 500]) == []


def test_each_burst_after_a_new_peak_is_trimmed() -> None:
    n = TRIM_AFTER * 2
    assert _trims([n, 0, 0, n, n, 0, 0]) == [n, n]


def test_bursts_repeated_every_few_seconds_are_trimmed_once_per_interval() -> None:
    # a client opening and closing TRIM_AFTER connections every 3 s for 2 minutes,
    # observed once a second: a trim at most once per interval, not one per burst
    n = TRIM_AFTER
    trims = _timed_trims([n, 0, 0] * 40, seconds_apart=1.0)
    assert [at for at, _ in trims] == [2.0, 32.0, 62.0, 92.0]
    assert all(closed == n for _, closed in trims)


def test_a_trim_held_back_by_the_interval_comes_once_it_is_over() -> None:
    n = TRIM_AFTER
    # a second burst 4 s after the first trim, then the count stays low: its trim
    # waits for the interval, then frees everything closed since the last peak
    counts = [n, 0, 0, n * 2, n * 2, 0] + [0] * 40
    assert _timed_trims(counts, seconds_apart=1.0) == [(2.0, n), (32.0, n * 2)]
