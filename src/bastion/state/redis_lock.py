"""A lock in Redis held by one process among many instances: ``SET key token NX PX ttl``.

The holder refreshes it from a background thread every third of ``ttl`` with a script that
extends it only while the token is still its own; only the holder deletes it (compare and
delete). A holder that dies stops refreshing: the lock expires after ``ttl`` and another
instance takes it. Blocking code (the ACME thread, the commands).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from redis.exceptions import RedisError

__all__ = ["LockTimeout", "RedisLock"]

log = logging.getLogger("bastion.state")

_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LockTimeout(TimeoutError):
    """Another instance held the lock for longer than the wait allows."""


class RedisLock:
    """``with RedisLock(client, key): ...``; one use per instance."""

    def __init__(
        self,
        client: Any,
        key: str,
        ttl: float = 30.0,
        wait: float = 600.0,
        poll: float = 0.5,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = max(1, int(ttl * 1000))
        self.wait = wait
        self.poll = poll
        self.on_wait = on_wait  # told the holder's token once, when the lock is taken
        # who holds it, for the operator: host, process, then a random part
        self.token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(8)}"
        self.stopped = threading.Event()
        self.refresher: threading.Thread | None = None

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, waiting (polling) while another process holds it; `LockTimeout`
        after ``wait`` seconds. Redis errors propagate (the caller decides what to do)."""
        deadline = time.monotonic() + self.wait
        told = False
        while not self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
            if not told and self.on_wait is not None:
                holder = self.client.get(self.key)
                self.on_wait(holder.decode(errors="replace") if holder else "?")
                told = True
            if time.monotonic() >= deadline:
                raise LockTimeout(f"{self.key} was held by another instance for {self.wait:.0f}s")
            time.sleep(self.poll)
        self.stopped.clear()
        self.refresher = threading.Thread(target=self._refresh, name="lock-refresh", daemon=True)
        self.refresher.start()

    def _refresh(self) -> None:
        extend = self.client.register_script(_EXTEND)
        while not self.stopped.wait(self.ttl_ms / 3000):
            try:
                kept = extend(keys=[self.key], args=[self.token, self.ttl_ms])
            except (RedisError, OSError) as exc:  # try again; past ttl it may be lost
                log.debug("cannot extend the lock %s: %s", self.key, exc)
                continue
            if not kept:
                log.warning(
                    "lost the lock %s (it expired before it was extended): another instance "
                    "may be doing the same work",
                    self.key,
                )
                return

    def release(self) -> None:
        self.stopped.set()
        if self.refresher is not None:
            self.refresher.join()
            self.refresher = None
        try:
            self.client.register_script(_RELEASE)(keys=[self.key], args=[self.token])
        except (RedisError, OSError) as exc:  # it expires by itself within ttl
            log.debug("cannot release the lock %s: %s", self.key, exc)
