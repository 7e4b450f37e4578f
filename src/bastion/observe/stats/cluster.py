"""The writing side of the cluster view: each worker's figures per minute, held in the
statistics writer's thread and written to Redis every `stats.cluster_interval` seconds.

A worker keeps, for each minute it has figures of, the minute's route rows (the columns of
the statistics file) and a top-K summary per dimension, and writes them whole under its pid
(`state.redis_stats`): a write replaces the worker's previous write of the minute, so a
repeated or late write never counts twice. A minute is dropped from memory once it is
closed and written, or when it is older than HELD (Redis was unreachable that long: those
figures stay in the statistics file only).

Encoding (compact, and readable with redis-cli): a route row is its values in the order of
`schema.FIGURES`, comma-separated, zeros left empty and trailing zeros cut
("30,,28,,2,,,,,,,,2,…"); a top-K summary is JSON, a list of [key, count, extra].
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable, Mapping
from typing import Protocol

from bastion.observe.stats.schema import FIGURES, MINUTES
from bastion.observe.stats.sketch import TopSketch

__all__ = [
    "ClusterPublisher",
    "MinuteBook",
    "decode_row",
    "decode_top",
    "encode_row",
    "instance_name",
]

log = logging.getLogger("bastion.stats")

HELD = 10 * 60  # seconds of minutes held while Redis cannot be written
CLOSE_LAG = 5  # a minute is closed this long after its end (its last seconds are written)
_INSTANCE_ENV = "BASTION_INSTANCE"  # set by `bastion run` to its pid (balance.status)


def instance_name(configured: str | None) -> str:
    """`stats.instance`, or hostname:pid of `bastion run` (every worker of an instance
    gives the same name)."""
    if configured:
        return configured
    return f"{socket.gethostname()}:{os.environ.get(_INSTANCE_ENV, os.getpid())}"


def _number(value: float) -> str:
    if not value:
        return ""
    if float(value).is_integer():
        return str(int(value))
    return repr(round(float(value), 6))


def encode_row(values: list[float]) -> str:
    return ",".join(_number(v) for v in values).rstrip(",")


def decode_row(text: str) -> list[float]:
    """The values of FIGURES; ValueError for a row this version cannot read."""
    parts = text.split(",") if text else []
    if len(parts) > len(FIGURES):
        raise ValueError("more values than figures")
    values = [float(part) if part else 0.0 for part in parts]
    return values + [0.0] * (len(FIGURES) - len(values))


def decode_top(text: str) -> list[tuple[str, int, int]]:
    rows = json.loads(text)
    return [(str(key), int(n), int(extra)) for key, n, extra in rows]


class MinuteBook:
    """One worker's figures per minute since they were last written."""

    def __init__(self, top_size: int) -> None:
        self.top_size = top_size
        self.routes: dict[int, dict[str, list[float]]] = {}
        self.tops: dict[int, dict[str, TopSketch]] = {}
        self.dirty: set[int] = set()

    def add_rows(self, rows: Mapping[tuple[int, str], list[float]]) -> None:
        """Route rows of the minutes table (start of the minute, route) -> values."""
        for (minute, route), values in rows.items():
            held = self.routes.setdefault(minute, {})
            before = held.get(route)
            held[route] = (
                list(values)
                if before is None
                else [a + b for a, b in zip(before, values, strict=True)]
            )
            self.dirty.add(minute)

    def add_top(self, minute: int, counted: Mapping[str, list[tuple[str, int, int]]]) -> None:
        sketches = self.tops.setdefault(minute, {})
        for dim, rows in counted.items():
            sketch = sketches.get(dim)
            if sketch is None:
                sketch = sketches[dim] = TopSketch(self.top_size)
            for key, n, extra in rows:
                sketch.add_one(key, n, extra)
        if counted:
            self.dirty.add(minute)

    def fields(self, minute: int, pid: int) -> dict[str, str]:
        """The worker's fields of one minute in Redis."""
        fields = {
            f"r|{pid}|{route}": encode_row(values)
            for route, values in self.routes.get(minute, {}).items()
        }
        for dim, sketch in self.tops.get(minute, {}).items():
            sketch.reduce()  # the summary written is bounded like the file's
            rows = [[key, n, sketch.extra.get(key, 0)] for key, n in sketch.counts.items()]
            fields[f"t|{pid}|{dim}"] = json.dumps(rows, separators=(",", ":"))
        return fields

    def forget(self, older_than: int) -> None:
        for held in (self.routes, self.tops):
            for minute in [m for m in held if m < older_than]:
                del held[minute]
        self.dirty = {m for m in self.dirty if m >= older_than}


class MinuteSink(Protocol):
    def push(
        self, instance: str, minutes: Mapping[int, Mapping[str, str]], seen: float, every: float
    ) -> None: ...


class ClusterPublisher:
    """Writes one worker's minutes to Redis from the statistics writer's thread: every
    `interval` seconds (and at the end), the minutes changed since, with the instance's
    heartbeat. Redis being unreachable is logged once when it starts and once when it
    ends; the statistics file is written either way."""

    def __init__(
        self,
        instance: str,
        interval: float,
        connect: Callable[[], MinuteSink],
        top_size: int,
    ) -> None:
        self.instance = instance
        self.interval = interval
        self.book = MinuteBook(top_size)
        self._connect = connect
        self._sink: MinuteSink | None = None
        self._next = 0.0
        self.failing = False
        self.pid = os.getpid()

    def tick(self, now: float, force: bool = False) -> None:
        if now < self._next and not force:
            return
        self._next = now + self.interval
        book = self.book
        minutes = {m: book.fields(m, self.pid) for m in sorted(book.dirty)}
        try:
            if self._sink is None:
                self._sink = self._connect()
            self._sink.push(self.instance, minutes, now, self.interval)
        except Exception as exc:
            # any failure (refused, timed out, credentials or a command refused) is Redis
            # being unavailable to this worker: it must never stop the statistics thread
            if not self.failing:
                self.failing = True
                log.warning(
                    "stats: cannot write the cluster figures to Redis (%s); statistics go "
                    "on in the local file, the cluster view misses this instance until "
                    "Redis answers",
                    _reason(exc),
                )
            book.forget(MINUTES.start(now) - HELD)
            return
        if self.failing:
            self.failing = False
            log.warning("stats: Redis answers again; cluster figures are written again")
        book.dirty.clear()
        book.forget(MINUTES.start(now - CLOSE_LAG))


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
