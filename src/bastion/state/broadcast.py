"""Messages to every worker: the interface, the data-dir backend and the in-process one.

A message is a small JSON object published on a topic (``cache-purge``: purges and
invalidations). It reaches the subscribers of that topic in every OTHER process that
shares the backend (the other workers, the running gateway from the CLI), within
`POLL_SECONDS` for the file backend; the publishing process has applied it already and
never gets it back. A message is kept for `KEEP_SECONDS`: a worker that starts or
subscribes meanwhile still gets it.

`FileBroadcast` is the backend of a single machine: one small JSON file per message in
``<data dir>/<topic>/`` (written atomically: a temp file renamed into place), polled by
each subscriber, removed past its age by whichever subscriber sees it first. A cluster
backend (Redis pub/sub) implements the same two methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from bastion.clock import SYSTEM_CLOCK, Clock

__all__ = [
    "KEEP_SECONDS",
    "POLL_SECONDS",
    "Broadcast",
    "FileBroadcast",
    "MemoryBroadcast",
    "Message",
    "Subscription",
]

log = logging.getLogger("bastion.state")

POLL_SECONDS = 0.5
KEEP_SECONDS = 60.0

Message = dict[str, object]
"""A message: a JSON object (str keys; str, number, bool, None, list or object values)."""


class Subscription(Protocol):
    def close(self) -> None:
        """Deliver nothing more."""
        ...


class Broadcast(Protocol):
    def where(self, topic: str) -> str:
        """Where the messages of ``topic`` go, for the operator's messages."""
        ...

    def publish(self, topic: str, message: Message) -> None:
        """Send ``message`` to the subscribers of ``topic`` in the other processes.
        Raises OSError when it cannot be sent."""
        ...

    def subscribe(self, topic: str, deliver: Callable[[Message], None]) -> Subscription:
        """Call ``deliver`` on the running event loop with each message of ``topic`` that
        another process publishes (and the ones still kept from before), until the
        subscription is closed."""
        ...


# ---------------------------------------------------------------------- files
class FileBroadcast:
    """Messages as files in ``<data dir>/<topic>/`` (one instance per process)."""

    def __init__(self, data_dir: Path, clock: Clock = SYSTEM_CLOCK) -> None:
        self.data_dir = data_dir
        self.clock = clock
        # per topic, the names this process wrote (oldest first): never delivered here
        self.own: dict[str, dict[str, None]] = {}

    def where(self, topic: str) -> str:
        return str(self.data_dir / topic)

    def publish(self, topic: str, message: Message) -> None:
        directory = self.data_dir / topic
        directory.mkdir(parents=True, exist_ok=True)
        stamp = int(self.clock.time() * 1e9)
        name = f"{stamp:020d}-{os.getpid()}-{os.urandom(4).hex()}.json"
        tmp = directory / ("." + name)
        tmp.write_text(json.dumps(message))
        tmp.replace(directory / name)
        own = self.own.setdefault(topic, {})
        own[name] = None
        # forget the names of messages past their age: the files are gone, or soon will be
        while own:
            old = next(iter(own))
            if _age(old, stamp) <= KEEP_SECONDS:
                break
            del own[old]

    def subscribe(self, topic: str, deliver: Callable[[Message], None]) -> FileSubscription:
        return FileSubscription(self, topic, deliver, asyncio.get_running_loop())


class FileSubscription:
    """Looks at a topic's directory every `POLL_SECONDS` and delivers each new file once."""

    def __init__(
        self,
        broadcast: FileBroadcast,
        topic: str,
        deliver: Callable[[Message], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.broadcast = broadcast
        self.topic = topic
        self.directory = broadcast.data_dir / topic
        self.deliver = deliver
        self.loop = loop
        self.seen: set[str] = set()
        self.handle: asyncio.TimerHandle | None = loop.call_later(POLL_SECONDS, self._tick)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _tick(self) -> None:
        if self.handle is None:
            return
        try:
            self.poll()
        except OSError as exc:
            log.warning("broadcast: cannot read %s: %s", self.directory, exc)
        self.handle = self.loop.call_later(POLL_SECONDS, self._tick)

    def poll(self) -> None:
        """Deliver the messages not seen yet; remove those past `KEEP_SECONDS`."""
        try:
            names = sorted(
                n for n in os.listdir(self.directory) if n.endswith(".json") and n[0] != "."
            )  # (".name": a message being written)
        except FileNotFoundError:
            return
        now = int(self.broadcast.clock.time() * 1e9)
        own = self.broadcast.own.get(self.topic, {})
        for name in names:
            path = self.directory / name
            if name not in self.seen:
                self.seen.add(name)
                if name not in own:
                    try:
                        message = json.loads(path.read_text())
                    except (OSError, ValueError):
                        message = None
                    if isinstance(message, dict):
                        self.deliver(message)
            if _age(name, now) > KEEP_SECONDS:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        self.seen &= set(names)


def _age(name: str, now_ns: int) -> float:
    """Seconds since a message file of this name was written (0 for a foreign name)."""
    try:
        return (now_ns - int(name.split("-", 1)[0])) / 1e9
    except ValueError:
        return 0.0


# ------------------------------------------------------------------ in process
class MemoryBroadcast:
    """Messages between the `MemoryBroadcast` objects of one hub, in one process: what a
    backend must do, without files or a server (for tests and embedding)."""

    def __init__(self, hub: dict[str, list[MemorySubscription]] | None = None) -> None:
        self.hub: dict[str, list[MemorySubscription]] = {} if hub is None else hub

    def where(self, topic: str) -> str:
        return f"memory:{topic}"

    def publish(self, topic: str, message: Message) -> None:
        text = json.dumps(message)  # what a wire would carry: a copy, JSON only
        for sub in self.hub.get(topic, ()):
            if sub.broadcast is not self:
                sub.loop.call_soon(sub.receive, text)

    def subscribe(self, topic: str, deliver: Callable[[Message], None]) -> MemorySubscription:
        sub = MemorySubscription(self, topic, deliver, asyncio.get_running_loop())
        self.hub.setdefault(topic, []).append(sub)
        return sub


class MemorySubscription:
    def __init__(
        self,
        broadcast: MemoryBroadcast,
        topic: str,
        deliver: Callable[[Message], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.broadcast = broadcast
        self.topic = topic
        self.deliver: Callable[[Message], None] | None = deliver
        self.loop = loop

    def receive(self, text: str) -> None:
        if self.deliver is not None:
            self.deliver(json.loads(text))

    def close(self) -> None:
        self.deliver = None
        subs = self.broadcast.hub.get(self.topic, [])
        if self in subs:
            subs.remove(self)
