"""The statistics file: where it is, its tables, and how to open it for writing or reading.

One SQLite file, ``stats.sqlite3`` in the data dir. SQLite because it is in the standard
library (no new dependency, no server to run), keeps everything in one file that survives
restarts and is easy to copy, and gives transactions across processes: every worker of an
instance writes its own figures into the same rows with upsert-add
(``INSERT … ON CONFLICT DO UPDATE SET n = n + excluded.n``), so a row holds the instance's
totals whichever worker wrote it, and readers (``bastion stats``, the admin API) read
consistent snapshots while the workers write (WAL mode).

Route figures are kept at four resolutions, each row one route during one period starting
at ``t`` (epoch seconds): ``seconds`` (kept 15 minutes), ``minutes`` (48 hours),
``quarters`` (quarter hours, 48 hours), ``hours`` (90 days). Their columns are plain
counters so that any window is a ``sum()``; latency histograms are one column per bucket
of ``STATS_BUCKETS``. Top-K summaries are kept per minute (``top_minutes``, 48 hours), per
hour (``top_hours``, 90 days) and per day (``top_days``, 90 days, UTC days); the last 5xx
answers in ``errors`` (48 hours).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from bastion.observe.interval import BUCKET_COUNT

__all__ = [
    "COUNTERS",
    "DAYS",
    "FIGURES",
    "INTERESTING_CODES",
    "LATENCY",
    "QUARTERS",
    "RESOLUTIONS",
    "STATS_FILE",
    "TOP_TABLES",
    "UPSTREAM",
    "Resolution",
    "open_reader",
    "open_writer",
]

STATS_FILE = "stats.sqlite3"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 5000  # a writer waits this long for another worker's transaction

# exact status codes kept as columns (the refusals chart and the common failures)
INTERESTING_CODES = (401, 403, 404, 429, 500, 502, 503, 504)

LATENCY = tuple(f"lat_{i}" for i in range(BUCKET_COUNT))  # total duration histogram
UPSTREAM = tuple(f"up_{i}" for i in range(BUCKET_COUNT))  # upstream duration histogram
COUNTERS = (
    "requests",
    "s1xx",
    "s2xx",
    "s3xx",
    "s4xx",
    "s5xx",
    *(f"c{code}" for code in INTERESTING_CODES),
    "cache_hits",  # HIT, STALE, REVALIDATED: answered from the cache
    "cache_lookups",  # the hits and MISS (BYPASS is no lookup)
    "refused",  # refused by a policy (auth, rate limit, quota, IP rule, body, …)
    "bytes_in",
    "bytes_out",
    "latency_sum",  # seconds (REAL)
    "upstream_sum",
    *LATENCY,
    *UPSTREAM,
)
FIGURES = COUNTERS  # every summed column of a route table


class Resolution:
    """One table of route figures: its name, row width and how long rows are kept."""

    def __init__(self, table: str, step: int, keep: int) -> None:
        self.table = table
        self.step = step  # seconds per row
        self.keep = keep  # seconds

    def start(self, t: float) -> int:
        """The start of the row holding time ``t``."""
        return int(t) // self.step * self.step


SECONDS = Resolution("seconds", 1, 15 * 60)
MINUTES = Resolution("minutes", 60, 48 * 3600)
# quarter hours: the 24h window's series step, read as 96 rows a route instead of 1440
QUARTERS = Resolution("quarters", 900, 48 * 3600)
HOURS = Resolution("hours", 3600, 90 * 86400)
RESOLUTIONS = (SECONDS, MINUTES, QUARTERS, HOURS)
DAYS = Resolution("days", 86400, 90 * 86400)  # top-K only: a 30-day window reads 30 rows

# top-K tables: (name, resolution they follow)
TOP_TABLES = (("top_minutes", MINUTES), ("top_hours", HOURS), ("top_days", DAYS))
ERRORS_KEEP = MINUTES.keep
ERRORS_MAX = 5000  # rows of `errors` kept at most (a storm of 5xx must not fill the disk)


def _route_table(name: str) -> str:
    columns = ",\n  ".join(
        f"{col} {'REAL' if col.endswith('_sum') else 'INTEGER'} NOT NULL DEFAULT 0"
        for col in COUNTERS
    )
    return (
        f"CREATE TABLE IF NOT EXISTS {name} (\n  t INTEGER NOT NULL,\n  route TEXT NOT NULL,\n"
        f"  {columns},\n  PRIMARY KEY (t, route)\n) WITHOUT ROWID"
    )


def _top_table(name: str) -> str:
    # clustered on (dim, t): a window of one dimension is one range scan
    return (
        f"CREATE TABLE IF NOT EXISTS {name} (\n  dim TEXT NOT NULL,\n  t INTEGER NOT NULL,\n"
        "  key TEXT NOT NULL,\n  n INTEGER NOT NULL,\n  extra INTEGER NOT NULL DEFAULT 0,\n"
        "  PRIMARY KEY (dim, t, key)\n) WITHOUT ROWID"
    )


SCHEMA = (
    *(_route_table(resolution.table) for resolution in RESOLUTIONS),
    *(_top_table(name) for name, _ in TOP_TABLES),
    "CREATE TABLE IF NOT EXISTS errors (time REAL NOT NULL, route TEXT, method TEXT, "
    "path TEXT, status INTEGER, request_id TEXT, upstream TEXT)",
    "CREATE INDEX IF NOT EXISTS errors_time ON errors (time)",
)


def stats_path(data_dir: Path) -> Path:
    return data_dir / STATS_FILE


def open_writer(path: Path) -> sqlite3.Connection:
    """A connection that writes: creates the file and its tables if missing, WAL mode.

    Several processes open it at once: creating the tables is idempotent and done in one
    transaction, and `busy_timeout` makes a writer wait for another's transaction instead
    of failing. Switching a new file to WAL is the exception: SQLite answers "database is
    locked" at once, without waiting, to a connection that asks while another holds the
    file (it would otherwise risk a deadlock), so the opening is tried again for as long
    as `busy_timeout` would have waited."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            return _open_writer_once(path)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def _open_writer_once(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA journal_mode = WAL")
        # NORMAL: a power cut may lose the last transactions (a second of figures), never
        # corrupt the file; FULL would fsync every second for nothing a user would miss
        db.execute("PRAGMA synchronous = NORMAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"{path} was written by a newer bastion (schema {version}, this one knows "
                f"{SCHEMA_VERSION}); move it away to start new statistics"
            )
        db.execute("BEGIN IMMEDIATE")
        for statement in SCHEMA:
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        db.close()
        raise
    return db


def open_reader(path: Path) -> sqlite3.Connection | None:
    """A read-only connection, or None when the file does not exist yet (nothing was
    recorded). Reads see the last committed figures while workers write (WAL)."""
    if not path.exists():
        return None
    db = sqlite3.connect(
        f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False
    )
    try:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            # a writer is creating the tables right now (or a newer bastion wrote the
            # file, which its writer refuses to touch): nothing this version can read
            db.close()
            return None
    except BaseException:
        db.close()
        raise
    return db
