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
from pathlib import Path

__all__ = ["LOCK_FILE", "AlertLock"]

LOCK_FILE = "alerts.lock"


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
