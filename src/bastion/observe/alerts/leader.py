"""Which process of an instance evaluates the alerts: the one holding an exclusive lock on a
file of the data dir.

Every worker runs an ``AlertManager``; each second an idle one tries the lock without
waiting, so exactly one evaluates and notifies (a rule fires once, not once per worker), and
when that worker dies the kernel frees the lock and another takes over within a second.
The workers of one instance share ``BASTION_INSTANCE`` (the pid of ``bastion run``), so that
variable cannot single one of them out; a lock also covers two instances sharing a data dir.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from bastion.state.snapshots import Snapshots

__all__ = ["LOCK_FILE", "TOPIC", "AlertLock", "shared_status"]

LOCK_FILE = "alerts.lock"
TOPIC = "alerts"
"""The snapshots topic the evaluating worker publishes the rules' states under."""

States = list[dict[str, Any]]


def shared_status(
    snapshots: Snapshots,
) -> tuple[Callable[[States], None], Callable[[], States | None]]:
    """``(publish, read)`` for ``AlertManager``: the evaluating worker puts the states into
    its snapshot; another worker (the admin API may be served by any) reads the newest."""

    def publish(states: States) -> None:
        snapshots.put(TOPIC, {"states": states})

    def read() -> States | None:
        try:
            found = [s for s in snapshots.read(TOPIC) if isinstance(s.get("states"), list)]
        except OSError:
            return None
        return cast("States", found[-1]["states"]) if found else None

    return publish, read


class AlertLock:
    """A non-blocking exclusive ``flock``, held until ``release`` or the process ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> AlertLock:
        return cls(data_dir / LOCK_FILE)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Whether this process holds the lock (taking it if it is free)."""
        if self._fd is not None:
            return True
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
