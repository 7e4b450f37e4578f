"""Top-K summaries: the Misra-Gries bound (every count a lower bound, short by at most
N/(K+1); every key above that kept), in memory, merged, and stored in the statistics file."""

from __future__ import annotations

import random
import sqlite3
from collections import Counter
from pathlib import Path

from bastion.clock import ManualClock
from bastion.observe.stats import StatsStore, StatsWriter
from bastion.observe.stats.prune import TOP_KEPT
from bastion.observe.stats.schema import STATS_FILE, open_writer
from bastion.observe.stats.sketch import MAX_KEY, TopSketch, reduce_stored
from statskit import figures, interval

T0 = 1_800_000_000


def zipf_stream(seed: int, keys: int, draws: int) -> Counter[str]:
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(keys)]
    names = [f"/item/{rank}" for rank in range(keys)]
    return Counter(rng.choices(names, weights, k=draws))


def chunks(counts: Counter[str], size: int) -> list[dict[str, int]]:
    items = list(counts.items())
    random.Random(1).shuffle(items)
    return [dict(items[i : i + size]) for i in range(0, len(items), size)]


def assert_bound(kept: dict[str, int], true: Counter[str], error: float) -> None:
    for key, n in kept.items():
        assert true[key] - error <= n <= true[key], key
    for key, n in true.items():
        if n > error:
            assert key in kept, (key, n, error)


def test_sketch_keeps_heavy_hitters_within_the_bound() -> None:
    true = zipf_stream(seed=7, keys=5000, draws=100_000)
    sketch = TopSketch(capacity=50)
    for part in chunks(true, 300):  # seconds of traffic, each a batch of counts
        sketch.add(part)
        assert len(sketch.counts) <= 4 * 50
    rows = sketch.take()
    assert len(rows) <= 50
    kept = {key: n for key, n, _ in rows}
    assert_bound(kept, true, 100_000 / 51)
    assert max(kept, key=kept.__getitem__) == "/item/0"
    assert not sketch  # take() starts afresh


def test_merged_summaries_keep_the_bound_of_the_whole() -> None:
    """Two workers' summaries added up (what upsert-add does in the file), then reduced."""
    a = zipf_stream(seed=1, keys=3000, draws=40_000)
    b = zipf_stream(seed=2, keys=3000, draws=60_000)
    left, right = TopSketch(capacity=30), TopSketch(capacity=30)
    for part in chunks(a, 200):
        left.add(part)
    for part in chunks(b, 200):
        right.add(part)
    merged = TopSketch(capacity=30)
    for key, n, _ in left.take() + right.take():
        merged.add_one(key, n)
    kept = {key: n for key, n, _ in merged.take()}
    assert len(kept) <= 30
    # each summary short by at most its N/(K+1), the final reduction by at most N/(K+1)
    assert_bound(kept, a + b, 2 * 100_000 / 31)


def test_extra_figures_follow_their_key() -> None:
    sketch = TopSketch(capacity=2)
    sketch.add_one("alice", 100, extra=7)
    sketch.add_one("bob", 50, extra=5)
    sketch.add_one("carol", 10, extra=3)
    rows = {key: (n, extra) for key, n, extra in sketch.take()}
    assert rows == {"alice": (90, 7), "bob": (40, 5)}


def test_long_keys_are_clipped() -> None:
    sketch = TopSketch(capacity=5)
    sketch.add({"/" + "a" * 5000: 3})
    ((key, n, _),) = sketch.take()
    assert len(key) == MAX_KEY and key.endswith("…") and n == 3


def test_stored_summary_is_reduced_in_place(tmp_path: Path) -> None:
    db = open_writer(tmp_path / STATS_FILE)
    true = zipf_stream(seed=3, keys=2000, draws=30_000)
    db.executemany(
        "INSERT INTO top_minutes (dim, t, key, n) VALUES ('paths', ?, ?, ?)",
        [(T0, key, n) for key, n in true.items()],
    )
    db.execute(
        "INSERT INTO top_minutes (dim, t, key, n) VALUES ('paths', ?, '/other', 5)", (T0 + 60,)
    )
    reduce_stored(db, "top_minutes", "paths", T0, 40)
    kept = dict(db.execute("SELECT key, n FROM top_minutes WHERE t = ?", (T0,)).fetchall())
    assert len(kept) <= 40
    assert_bound(kept, true, 30_000 / 41)
    assert reduce_stored(db, "top_minutes", "paths", T0, 40) == 0  # idempotent
    assert db.execute("SELECT n FROM top_minutes WHERE t = ?", (T0 + 60,)).fetchone() == (5,)
    db.close()


def test_top_tables_of_a_flood_of_paths_stay_bounded(tmp_path: Path) -> None:
    """A scan of thousands of distinct paths a second, from two workers, for a minute: the
    file keeps at most TOP_KEPT paths for the minute and the hour, and the summary's top
    paths are within the bound (2N/(K+1): the flushes' reductions and the file's)."""
    clock = ManualClock(T0)
    true: Counter[str] = Counter()
    writers = [StatsWriter(tmp_path, clock) for _ in range(2)]
    try:
        for second in range(60):
            for n, writer in enumerate(writers):
                counts = zipf_stream(seed=second * 2 + n, keys=20_000, draws=3000)
                true.update(counts)
                writer.add(interval(T0 + second, {"api": figures(3000)}, paths=counts))
        # a minute of a scan is a lot of work for the writer threads: on a loaded machine
        # it takes longer than flush's default wait (this is no timing assertion)
        assert all(writer.flush(timeout=300) for writer in writers)
        clock.advance(61)  # the next retention pass reduces the grown summaries
        assert all(writer.flush(timeout=300) for writer in writers)
    finally:
        for writer in writers:
            writer.close()
    with sqlite3.connect(tmp_path / STATS_FILE) as db:
        for table in ("top_minutes", "top_hours"):
            (count,) = db.execute(f"SELECT count(*) FROM {table} WHERE dim = 'paths'").fetchone()
            assert 0 < count <= TOP_KEPT
    total = sum(true.values())
    top = StatsStore(tmp_path, clock).summary("1h")["top"]["paths"]
    assert len(top) == 10
    error = 2 * total / (TOP_KEPT + 1)
    for row in top:
        assert true[row["key"]] - error <= row["requests"] <= true[row["key"]]
    assert top[0]["key"] == "/item/0"
