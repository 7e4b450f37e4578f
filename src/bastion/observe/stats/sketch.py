"""Bounded top-K counting: Misra-Gries summaries, in memory and in the statistics file.

A summary keeps at most `capacity` keys. When it holds more, it is *reduced*: the
(capacity+1)-th largest count δ is subtracted from every count and the keys left at zero
or below are dropped. Each reduction removes at least (capacity+1)·δ from the summary's
total, which never exceeds the N requests counted, so the reductions add up to at most
N/(capacity+1): every count kept is a lower bound of the true count, short by at most
N/(capacity+1), and every key whose true count exceeds N/(capacity+1) is kept.

Summaries merge by adding counts (the errors add up, each bounded by its own share of N),
which is how several workers, several flushes of a minute, and the minutes of an hour
combine in the file with upsert-add; reducing the sum again keeps the same kind of bound.
Reduction is lazy (only once a summary holds several times its capacity) so that adding a
second's counts is a dict update, not a sort.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Mapping

__all__ = ["MAX_KEY", "TopSketch", "reduce_stored"]

MAX_KEY = 200  # characters of a key kept (a path or a referrer can be kilobytes long)
SLACK = 4  # reduce once a summary holds this many times its capacity


def clip(key: str) -> str:
    return key if len(key) <= MAX_KEY else key[: MAX_KEY - 1] + "…"


class TopSketch:
    """One dimension's counts during one flush period, bounded to `capacity` keys after
    `take()`, and to SLACK x capacity meanwhile."""

    __slots__ = ("capacity", "counts", "extra")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.counts: dict[str, int] = {}
        # a second figure carried along with a key (a consumer's 429s); dropped with it
        self.extra: dict[str, int] = {}

    def add(self, counts: Mapping[str, int]) -> None:
        held = self.counts
        for key, n in counts.items():
            if len(key) > MAX_KEY:
                key = clip(key)
            held[key] = held.get(key, 0) + n
        if len(held) > SLACK * self.capacity:
            self.reduce()

    def add_one(self, key: str, n: int, extra: int = 0) -> None:
        key = clip(key)
        self.counts[key] = self.counts.get(key, 0) + n
        if extra:
            self.extra[key] = self.extra.get(key, 0) + extra
        if len(self.counts) > SLACK * self.capacity:
            self.reduce()

    def reduce(self) -> int:
        """Keep at most `capacity` keys; the amount subtracted from every count (0 when
        nothing had to go)."""
        if len(self.counts) <= self.capacity:
            return 0
        delta = heapq.nlargest(self.capacity + 1, self.counts.values())[-1]
        self.counts = {key: n - delta for key, n in self.counts.items() if n > delta}
        self.extra = {key: n for key, n in self.extra.items() if key in self.counts}
        return delta

    def take(self) -> list[tuple[str, int, int]]:
        """The reduced summary as (key, count, extra) rows, and start afresh."""
        self.reduce()
        rows = [(key, n, self.extra.get(key, 0)) for key, n in self.counts.items()]
        self.counts = {}
        self.extra = {}
        return rows

    def __bool__(self) -> bool:
        return bool(self.counts)


def reduce_stored(db: sqlite3.Connection, table: str, dim: str, t: int, capacity: int) -> int:
    """Reduce one stored summary (a dimension's rows of one period) to `capacity` keys, the
    same way as `TopSketch.reduce`. Runs inside the caller's transaction; idempotent, so
    workers reducing the same period one after the other do it once."""
    row = db.execute(
        f"SELECT n FROM {table} WHERE dim = ? AND t = ? ORDER BY n DESC LIMIT 1 OFFSET ?",
        (dim, t, capacity),
    ).fetchone()
    if row is None:
        return 0
    delta = int(row[0])
    db.execute(f"DELETE FROM {table} WHERE dim = ? AND t = ? AND n <= ?", (dim, t, delta))
    db.execute(f"UPDATE {table} SET n = n - ? WHERE dim = ? AND t = ?", (delta, dim, t))
    return delta
