"""Each worker's latest snapshot of something (``status``: its pools), for anyone to read.

Unlike a broadcast message, a snapshot replaces the worker's previous one and lasts as
long as the worker: a reader (``bastion status``) gets the latest snapshot of every live
worker. `FileSnapshots` keeps them in ``<data dir>/<topic>/worker-<pid>.json``, written
with an atomic rename; a cluster backend (a Redis hash with expiring fields) implements the
same methods.

The files may name backends and their health: they are the owner's only (0600, in a 0700
directory). A worker removes its file when it stops; the file of a worker that died
without stopping (killed, crashed) is removed by the next worker that publishes and by a
reader: a file whose pid is gone, or that nobody rewrote for `STALE` seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Protocol

__all__ = ["STALE", "FileSnapshots", "MemorySnapshots", "Snapshot", "Snapshots"]

Snapshot = dict[str, object]
"""A snapshot: a JSON object."""

# a live worker rewrites its file every second or so: one this old belongs to nobody (its
# pid may since have been given to another process)
STALE = 30.0


class Snapshots(Protocol):
    def where(self, topic: str) -> str:
        """Where the snapshots of ``topic`` are kept, for the operator's messages."""
        ...

    def put(self, topic: str, snapshot: Snapshot) -> None:
        """Replace this worker's snapshot of ``topic``. Raises OSError on failure."""
        ...

    def remove(self, topic: str) -> None:
        """Withdraw this worker's snapshot (it stops)."""
        ...

    def forget_gone(self, topic: str) -> None:
        """Drop the snapshots of workers that are gone without withdrawing theirs."""
        ...

    def read(self, topic: str) -> list[Snapshot]:
        """The latest snapshot of every live worker, in a stable order."""
        ...


class FileSnapshots:
    """Snapshots as files, one per worker, in ``<data dir>/<topic>/``. File ages are
    compared with the system's clock: the file system writes its times by it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def where(self, topic: str) -> str:
        return str(self.data_dir / topic)

    def _path(self, topic: str) -> Path:
        return self.data_dir / topic / f"worker-{os.getpid()}.json"

    def put(self, topic: str, snapshot: Snapshot) -> None:
        directory = self.data_dir / topic
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self._path(topic)
        tmp = path.with_suffix(".tmp")
        # created 0600 (never readable by others, not even between open and chmod), then
        # renamed over the old one: a reader sees a whole file or the previous one
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)  # an old .tmp left with other bits keeps them through O_CREAT
            os.write(fd, json.dumps(snapshot).encode())
        finally:
            os.close(fd)
        tmp.replace(path)

    def remove(self, topic: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(topic).unlink()

    def forget_gone(self, topic: str) -> None:
        sweep(self.data_dir / topic)

    def read(self, topic: str) -> list[Snapshot]:
        """The files of dead workers are removed on the way."""
        directory = self.data_dir / topic
        sweep(directory)
        found = []
        for path in sorted(directory.glob("worker-*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            pid = path.stem.removeprefix("worker-")
            if isinstance(data, dict) and pid.isdigit() and _alive(int(pid)):
                found.append(data)
        return found


def sweep(directory: Path) -> None:
    """Remove the files of workers that are gone: their pid is dead, or they are STALE."""
    now = time.time()
    try:
        paths = list(directory.glob("worker-*.json")) + list(directory.glob("worker-*.tmp"))
    except OSError:
        return
    for path in paths:
        pid = path.stem.removeprefix("worker-")
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            stale = now - path.stat().st_mtime > STALE
            if stale or not _alive(int(pid)):
                path.unlink()
        except OSError:
            continue  # removed meanwhile, or not ours to remove


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class MemorySnapshots:
    """Snapshots in this process, by worker name: the `MemorySnapshots` objects sharing a
    board see each other's (for tests and embedding)."""

    def __init__(self, worker: str = "", board: dict[str, dict[str, str]] | None = None) -> None:
        self.worker = worker or str(os.getpid())
        self.topics: dict[str, dict[str, str]] = {} if board is None else board

    def where(self, topic: str) -> str:
        return f"memory:{topic}"

    def forget_gone(self, topic: str) -> None:
        pass  # a worker of this process withdraws its own

    def put(self, topic: str, snapshot: Snapshot) -> None:
        # kept as JSON text: what a reader gets is a copy, as from a file or a server
        self.topics.setdefault(topic, {})[self.worker] = json.dumps(snapshot)

    def remove(self, topic: str) -> None:
        self.topics.get(topic, {}).pop(self.worker, None)

    def read(self, topic: str) -> list[Snapshot]:
        snapshots = self.topics.get(topic, {})
        return [json.loads(snapshots[name]) for name in sorted(snapshots)]
