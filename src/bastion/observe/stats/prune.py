"""Keeping the statistics file bounded: retention of every table, and the reduction of
top-K summaries that several flushes and workers added up.

Every writer runs it once a minute, in a transaction of its own. Every step is
idempotent, so workers pruning the same file one after the other do the work once.
"""

from __future__ import annotations

import sqlite3

from bastion.observe.stats.rows import DIMENSIONS
from bastion.observe.stats.schema import ERRORS_KEEP, ERRORS_MAX, RESOLUTIONS, TOP_TABLES
from bastion.observe.stats.sketch import reduce_stored

__all__ = ["TOP_KEPT", "prune"]

# keys a top-K summary of a minute or an hour keeps (see sketch.py for the error bound)
TOP_KEPT = 100
# only recent periods are still written to, so only they can have grown
REDUCE_RECENT = 3 * 3600


def prune(db: sqlite3.Connection, now: float) -> None:
    """Drop what is past its retention and reduce grown top-K summaries."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for resolution in RESOLUTIONS:
            cutoff = resolution.start(now) - resolution.keep
            db.execute(f"DELETE FROM {resolution.table} WHERE t < ?", (cutoff,))
        for table, resolution in TOP_TABLES:
            cutoff = resolution.start(now) - resolution.keep
            for dim in DIMENSIONS:
                db.execute(f"DELETE FROM {table} WHERE dim = ? AND t < ?", (dim, cutoff))
        db.execute("DELETE FROM errors WHERE time < ?", (now - ERRORS_KEEP,))
        db.execute(
            "DELETE FROM errors WHERE rowid <= (SELECT max(rowid) FROM errors) - ?",
            (ERRORS_MAX,),
        )
        reduce_grown(db, now)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def reduce_grown(db: sqlite3.Connection, now: float) -> int:
    """Reduce the recent top-K summaries holding more than TOP_KEPT keys; how many."""
    reduced = 0
    for table, resolution in TOP_TABLES:
        since = resolution.start(now - REDUCE_RECENT)
        for dim in DIMENSIONS:
            grown = db.execute(
                f"SELECT t FROM {table} WHERE dim = ? AND t >= ? GROUP BY t HAVING count(*) > ?",
                (dim, since, TOP_KEPT),
            ).fetchall()
            for (t,) in grown:
                reduce_stored(db, table, dim, t, TOP_KEPT)
                reduced += 1
    return reduced
