"""When the worker gives memory back: once a fall of open connections has stopped."""

from __future__ import annotations

from bastion.server.memory import TRIM_AFTER, HeapTrimmer


def _trims(counts: list[int]) -> list[int]:
    trimmer = HeapTrimmer()
    done: list[int] = []
    trimmer.trim = done.append  # type: ignore[method-assign]
    for count in counts:
        trimmer.observe(count)
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
