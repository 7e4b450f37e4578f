"""How long a statistics summary takes on a full statistics file.

Builds a worst-case full file (every table at its retention: 15 minutes of seconds, 48
hours of minutes and quarter hours, 90 days of hours, for `--routes` routes, and every
top-K summary of every minute, hour and day full, with keys that differ from period to
period), then times
`StatsStore.summary` for every window and `period` for the alerts' usual look-backs:

    python bench/stats_summary.py [--routes 20] [--keep /tmp/stats-full]

The file is written with plain SQL inserts (the writer would take 90 days); its rows have
the layout the writer gives them.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from bastion.clock import ManualClock
from bastion.observe.stats import StatsStore
from bastion.observe.stats.prune import TOP_KEPT
from bastion.observe.stats.rows import DIMENSIONS
from bastion.observe.stats.schema import (
    FIGURES,
    HOURS,
    LATENCY,
    MINUTES,
    QUARTERS,
    RESOLUTIONS,
    SECONDS,
    UPSTREAM,
    open_writer,
)

NOW = 1_800_000_000.0


def route_rows(step: int, periods: int, routes: int) -> list[tuple[object, ...]]:
    rng = random.Random(step)
    first = int(NOW) // step * step - (periods - 1) * step
    rows = []
    for p in range(periods):
        for r in range(routes):
            requests = rng.randrange(100, 10_000)
            values: dict[str, float] = dict.fromkeys(FIGURES, 0)
            values.update(requests=requests, s2xx=requests - 20, s4xx=15, s5xx=5, c404=10)
            values.update(
                cache_hits=requests // 3, cache_lookups=requests // 2, bytes_out=requests * 900
            )
            for col in LATENCY + UPSTREAM:
                values[col] = rng.randrange(0, requests // 10 + 1)
            values.update(latency_sum=requests * 0.02, upstream_sum=requests * 0.015)
            rows.append((first + p * step, f"route-{r}", *(values[c] for c in FIGURES)))
    return rows


def top_rows(step: int, periods: int) -> list[tuple[object, ...]]:
    first = int(NOW) // step * step - (periods - 1) * step
    rows = []
    for p in range(periods):
        t = first + p * step
        for dim in DIMENSIONS:
            # half the keys recur in every period, half are new each period: the grouping
            # of a 30-day window meets thousands of distinct keys
            for k in range(TOP_KEPT):
                key = f"/{dim}/{k}" if k < TOP_KEPT // 2 else f"/{dim}/{p}/{k}"
                rows.append((dim, t, key, 1000 - k * 7, 0))
    return rows


def build(data_dir: Path, routes: int) -> None:
    db = open_writer(data_dir / "stats.sqlite3")
    columns = ", ".join(FIGURES)
    marks = ", ".join("?" * (len(FIGURES) + 2))
    periods = {
        SECONDS.table: 15 * 60,
        MINUTES.table: 48 * 60,
        QUARTERS.table: 48 * 4,
        HOURS.table: 90 * 24,
    }
    for resolution in RESOLUTIONS:
        count = periods[resolution.table]
        db.execute("BEGIN")
        db.executemany(
            f"INSERT INTO {resolution.table} (t, route, {columns}) VALUES ({marks})",
            route_rows(resolution.step, count, routes),
        )
        db.execute("COMMIT")
    for table, step, count in (
        ("top_minutes", 60, 48 * 60),
        ("top_hours", 3600, 90 * 24),
        ("top_days", 86400, 90),
    ):
        db.execute("BEGIN")
        db.executemany(
            f"INSERT INTO {table} (dim, t, key, n, extra) VALUES (?, ?, ?, ?, ?)",
            top_rows(step, count),
        )
        db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=20)
    parser.add_argument("--keep", type=Path, default=None, help="build the file here, keep it")
    args = parser.parse_args()
    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="bastion-stats-"))
    if not (data_dir / "stats.sqlite3").exists():
        started = time.perf_counter()
        build(data_dir, args.routes)
        print(f"built {data_dir / 'stats.sqlite3'} in {time.perf_counter() - started:.0f} s")
    size = (data_dir / "stats.sqlite3").stat().st_size
    with sqlite3.connect(data_dir / "stats.sqlite3") as db:
        counts = {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in (
                "seconds",
                "minutes",
                "quarters",
                "hours",
                "top_minutes",
                "top_hours",
                "top_days",
            )
        }
    print(f"file: {size / 2**20:.0f} MiB, rows: {counts}")
    store = StatsStore(data_dir, ManualClock(NOW))
    for window in ("5m", "1h", "24h", "7d", "30d"):
        store.summary(window)  # the first read of a window warms the page cache
        runs, cpu = [], []
        for _ in range(5):
            started, started_cpu = time.perf_counter(), time.process_time()
            store.summary(window)
            runs.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
        print(
            f"summary({window!r}): best {min(runs) * 1000:.0f} ms, worst {max(runs) * 1000:.0f} "
            f"ms (CPU time: best {min(cpu) * 1000:.0f} ms)"
        )
    for span in (300, 3600, 86400):
        started = time.perf_counter()
        store.period(NOW - span, NOW)
        print(f"period(last {span} s): {(time.perf_counter() - started) * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
