"""The process-wide limit store and its file in the data dir.

One `MemoryLimitStore` per data dir and process, created on first use and kept across
reloads (a reload compiles a new plan, the counters stay). Counters of long windows and
quotas are saved to ``<data dir>/ratelimit.json``: every few seconds when they changed (in a
thread, off the event loop) and at exit, and read back at start, so that a restart is not a
free reset. Several workers share the file: each save merges what is on disk with the
worker's own counters (the larger wins), under a lock.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import threading
import time
from pathlib import Path

from bastion.state.limits import MemoryLimitStore
from bastion.tls.store import atomic_write, ensure_dir, file_lock

__all__ = ["PersistentStore", "limit_store"]

log = logging.getLogger("bastion.state")

FILE_NAME = "ratelimit.json"


class PersistentStore(MemoryLimitStore):
    """A memory store saved to a file now and then."""

    def __init__(self, directory: Path, save_every: float = 5.0) -> None:
        super().__init__()
        self.path = directory / FILE_NAME
        self.save_every = save_every
        self.next_save = 0.0
        self._lock = threading.Lock()  # one save at a time
        self.failing = False
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("rate-limit counters in %s ignored: %s", self.path, exc)
            return
        self.restore(data, time.time())

    def take_and_save(self, now: float) -> None:
        """Called after `take`: start a save in a thread when one is due."""
        if self.dirty and now >= self.next_save:
            self.next_save = now + self.save_every
            snapshot = self.snapshot(now)
            threading.Thread(target=self._save, args=(snapshot,), daemon=True).start()

    def save_now(self) -> None:
        if self.dirty:
            self._save(self.snapshot(time.time()))

    def _save(self, snapshot: dict[str, object]) -> None:
        with self._lock:
            try:
                ensure_dir(self.path.parent)
                with file_lock(self.path.with_name(FILE_NAME + ".lock")):
                    merged = MemoryLimitStore()
                    with contextlib.suppress(OSError, ValueError):
                        merged.restore(json.loads(self.path.read_bytes()), time.time())
                    merged.restore(snapshot, time.time())
                    merged.persistent = set(merged.tat) | set(merged.quota)
                    data = json.dumps(merged.snapshot(time.time()), separators=(",", ":"))
                    atomic_write(self.path, data.encode(), 0o600)
            except OSError as exc:
                if not self.failing:  # once, not every few seconds
                    log.warning("cannot save rate-limit counters to %s: %s", self.path, exc)
                self.failing = True
            else:
                if self.failing:
                    log.info("rate-limit counters saved to %s again", self.path)
                self.failing = False


_stores: dict[Path, PersistentStore] = {}


def limit_store(directory: Path) -> PersistentStore:
    """The store of this process for ``directory`` (the data dir)."""
    store = _stores.get(directory)
    if store is None:
        store = _stores[directory] = PersistentStore(directory)
    return store


@atexit.register
def _save_all() -> None:
    for store in _stores.values():
        store.save_now()
