"""The limit store of a data dir: counters in memory, the long ones saved to a file.

One per data dir and process (``Stores.limits``, see `bastion.state.stores`), created on
first use and kept across reloads (a reload compiles a new plan, the counters stay).
Counters of long windows and quotas are saved to ``<data dir>/ratelimit.json``: every few
seconds when they changed (in a thread, off the event loop) and at exit, and read back at
start, so that a restart is not a free reset. Several workers share the file: each save
merges what is on disk with the worker's own counters (the larger wins), under a lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from itertools import islice
from pathlib import Path

from bastion.clock import SYSTEM_CLOCK, Clock
from bastion.state.files import atomic_write, ensure_dir, file_lock
from bastion.state.limits import Counters, MemoryLimitStore, snapshot_of

__all__ = ["FILE_NAME", "PersistentStore"]

log = logging.getLogger("bastion.state")

FILE_NAME = "ratelimit.json"


class PersistentStore(MemoryLimitStore):
    """A memory store saved to a file now and then."""

    def __init__(
        self, directory: Path, save_every: float = 5.0, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        super().__init__(clock=clock)
        self.path = directory / FILE_NAME
        self.save_every = save_every
        self.next_save = 0.0
        self._lock = threading.Lock()  # one save at a time
        self.failing = False
        self.last_duration = 0.0  # seconds the last save took
        # the file as this store last wrote or read it (inode, mtime, size): when it is
        # still that file, a save need not read it back to merge another worker's counters
        self.written: tuple[int, int, int] | None = None
        self._load()

    def _load(self) -> None:
        written = _identity(self.path)
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("rate-limit counters in %s ignored: %s", self.path, exc)
            return
        self.restore(data, self.clock.time())
        self.written = written

    def take_and_save(self, now: float) -> None:
        """Called after `take`: start a save in a thread when one is due.

        Only copies of the tables are made here; the thread does the rest. A save costs
        about 5 us per saved key (a million keys: seconds, and the thread holds the
        interpreter for much of it), so saves are spaced by at least 20 times the last
        one's duration: saving never takes more than about 5% of the worker's time."""
        if self.dirty and now >= self.next_save and not self._lock.locked():
            self.next_save = now + max(self.save_every, 20 * self.last_duration)
            counters = self.copy()
            threading.Thread(target=self._save, args=(counters,), daemon=True).start()

    def save_now(self) -> None:
        if self.dirty:
            self._save(self.copy())

    def close(self) -> None:
        self.save_now()

    def _save(self, counters: Counters) -> None:
        with self._lock:
            started = time.monotonic()  # what the save costs: real time, whatever the clock
            try:
                ensure_dir(self.path.parent)
                with file_lock(self.path.with_name(FILE_NAME + ".lock")):
                    now = self.clock.time()
                    snapshot = snapshot_of(counters, now)
                    if self._changed_by_another():
                        # another worker saved since: keep its counters too
                        merged = MemoryLimitStore(clock=self.clock)
                        with contextlib.suppress(OSError, ValueError):
                            merged.restore(json.loads(self.path.read_bytes()), now)
                        merged.restore(snapshot, now)
                        merged.persistent = set(merged.tat) | set(merged.quota)
                        snapshot = merged.snapshot(now)
                    atomic_write(self.path, _encode(snapshot), 0o600)
                    self.written = _identity(self.path)
            except OSError as exc:
                if not self.failing:  # once, not every few seconds
                    log.warning("cannot save rate-limit counters to %s: %s", self.path, exc)
                self.failing = True
            else:
                if self.failing:
                    log.info("rate-limit counters saved to %s again", self.path)
                self.failing = False
            self.last_duration = time.monotonic() - started

    def _changed_by_another(self) -> bool:
        """Whether there is a file, and it is not the one this store wrote last (or read
        at start)."""
        now = _identity(self.path)
        return now is not None and now != self.written


_SLICE = 20_000  # entries encoded at a time


def _encode(snapshot: dict[str, object]) -> bytes:
    """``json.dumps(snapshot)``, with the large tables encoded a slice at a time: the C
    encoder holds the interpreter until it is done, and a million entries in one call
    would stop the event loop for seconds."""
    parts = [f'{{"version":{snapshot["version"]},"saved":{snapshot["saved"]!r}']
    for name in ("tat", "quota"):
        table = snapshot[name]
        assert isinstance(table, dict)
        items = iter(table.items())
        slices = []
        while piece := dict(islice(items, _SLICE)):
            slices.append(json.dumps(piece, separators=(",", ":"))[1:-1])
        parts.append(f',"{name}":{{' + ",".join(slices) + "}")
    parts.append("}")
    return "".join(parts).encode()


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size
