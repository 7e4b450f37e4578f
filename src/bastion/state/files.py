"""The data dir and the file primitives every file backend of ``state/`` is built on.

The data dir holds what must survive a restart: the local CA, ACME accounts and
certificates, challenge answers, API keys, persisted limits.

Resolution, first match wins: the ``--data-dir`` flag (the CLI exports it as
``BASTION_DATA_DIR`` so that workers and reloads see the same value), the
``BASTION_DATA_DIR`` environment variable, the config's ``data_dir``, then
``/var/lib/bastion`` for root or ``$XDG_DATA_HOME/bastion`` (``~/.local/share/bastion``).

Writes are atomic: a temp file in the same directory, fsync, ``os.replace``, then an
fsync of the directory, so a crash mid-write leaves the old file or the new one, never half.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["DATA_DIR_ENV", "atomic_write", "ensure_dir", "file_lock", "resolve_data_dir"]

DATA_DIR_ENV = "BASTION_DATA_DIR"


def resolve_data_dir(configured: str | None) -> Path:
    """The data dir to use (not created)."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser().resolve()
    if configured:
        return Path(configured)
    if os.geteuid() == 0:
        return Path("/var/lib/bastion")
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "bastion"


def ensure_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700: it holds private keys) if missing."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically; the file gets ``mode`` from the start
    (a private key is never readable by others, not even for a moment)."""
    # imported here: tempfile brings shutil, bz2 and lzma, which a gateway that writes no
    # file of the data dir (a plain one, once its state exists) does not otherwise hold
    import tempfile

    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock between processes (and between threads, each opening its
    own descriptor): several workers starting at once create the CA or order a certificate
    once."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
