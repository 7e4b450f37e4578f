"""One pipelined connection to a single Redis server: the limit checks' fast path.

A worker checks a limit on every request of a limited route, many at a time. redis-py's
asyncio client gives each command in flight a connection of its own from its pool and
spends about 50 us of CPU per command (pool, retries, per-argument encoding, its own
timeout); a worker counting every request in Redis then did half the requests a second of
one counting in process. Here every command of the worker goes down one connection, in
order: the commands issued during one turn of the event loop leave in one write, the
replies are parsed by hiredis as they arrive and handed out in the same order. A command
costs a few microseconds of Python, and Redis reads many per system call.

Used for ``redis://`` and ``unix://`` servers (no TLS, no query options but ``db``);
``rediss://``, Sentinel and Cluster go through redis-py (`redis_client.connect`), which
knows how to find and follow their servers.

The breaker stays with the caller (`RedisConnection`). What this connection does on its
own: no command waits longer than the timeout (one timer watches the oldest command in
flight: a timer per command cost as much as the rest of the call); when the oldest has
waited that long, every command in flight fails with `TimeoutError` and the connection is
dropped, since the replies still owed on it may never come. A lost connection fails every
command in flight with redis-py's `ConnectionError`. The next command connects again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

__all__ = ["Pipelined", "pipelined_target"]


def pipelined_target(url: str) -> dict[str, Any] | None:
    """How to reach ``url`` with `Pipelined` (host and port or path, username, password,
    db), or None when the URL needs redis-py (TLS, query options other than ``db``)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    if parts.scheme not in ("redis", "unix") or set(query) - {"db"}:
        return None
    target: dict[str, Any] = {
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "db": 0,
    }
    if parts.scheme == "unix":
        target["path"] = unquote(parts.path)
        if "db" in query:
            target["db"] = int(query["db"][0])
    else:
        target["host"] = parts.hostname or "localhost"
        target["port"] = parts.port or 6379
        if parts.path.strip("/"):
            target["db"] = int(parts.path.strip("/"))
    return target


BULK_CACHE = 10_000
"""Words whose RESP form is remembered (limit keys and arguments repeat from request to
request); the table starts again when full."""

_bulk: dict[str | bytes, bytes] = {}


_ARRAYS = [b"*%d\r\n" % n for n in range(64)]  # (a %-format per command cost more)


def encode(*words: bytes | str) -> bytes:
    """A command in RESP: an array of bulk strings."""
    count = len(words)
    out = [_ARRAYS[count] if count < 64 else b"*%d\r\n" % count]
    for word in words:
        bulk = _bulk.get(word)
        if bulk is None:
            data = word.encode() if isinstance(word, str) else word
            bulk = b"$%d\r\n%s\r\n" % (len(data), data)
            if len(data) < 512:
                if len(_bulk) >= BULK_CACHE:
                    _bulk.clear()
                _bulk[word] = bulk
        out.append(bulk)
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    """Replies in, handed to the oldest waiting command; a watchdog fails the commands
    when the oldest has waited ``timeout`` (one timer for all of them, not one each)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.sent: deque[float] = deque()  # when each waiting command was sent (loop time)
        self.watchdog: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        self.pending: list[bytes] = []  # commands of this turn of the loop, not yet written

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiting, sent = self.waiting, self.sent
        while waiting and (reply := reader.gets()) is not False:
            future = waiting.popleft()
            sent.popleft()
            if not future.done():  # (its caller may have given up)
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost is None:
            self.lost = RedisConnectionError(f"connection to Redis lost: {exc or 'closed'}")
        self._fail(self.lost)

    def _fail(self, error: BaseException) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        self.sent.clear()
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Arm the watchdog for the oldest command in flight (when it is not armed)."""
        if self.watchdog is None and self.sent:
            self.watchdog = loop.call_at(self.sent[0] + self.timeout, self._bark, loop)

    def _bark(self, loop: asyncio.AbstractEventLoop) -> None:
        self.watchdog = None
        if not self.sent or self.lost is not None:
            return
        if loop.time() < self.sent[0] + self.timeout:
            self.watch(loop)  # the one it was armed for was answered: the next oldest
            return
        # the replies owed on this connection may never come: it is given up
        self.lost = TimeoutError(f"Redis did not answer within {self.timeout:g}s")
        self._fail(self.lost)
        if self.transport is not None:
            self.transport.abort()

    def flush(self) -> None:
        if self.pending and self.transport is not None and self.lost is None:
            self.transport.write(b"".join(self.pending))
        self.pending.clear()


class Pipelined:
    """Commands on one connection, pipelined; made by `connect` on the running loop."""

    def __init__(self, target: dict[str, Any], timeout: float) -> None:
        self.target = target
        self.timeout = timeout  # what a command may wait, connecting included
        self.protocol: _Protocol | None = None
        self.connecting: asyncio.Task[_Protocol] | None = None

    async def execute(self, command: bytes, loop: asyncio.AbstractEventLoop) -> Any:
        """Send ``command`` (RESP-encoded) and return its reply; a reply that is an error
        is raised (`ResponseError`), no reply within the timeout is a `TimeoutError`.
        ``loop``: the running loop (the caller has it: asking costs a system call)."""
        protocol = self.protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._connected()
        reply = await self._send(protocol, command, loop)
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    @property
    def ready(self) -> bool:
        """Connected, and the connection not lost: `send` can be used."""
        protocol = self.protocol
        return protocol is not None and protocol.lost is None

    def send(self, command: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
        """`execute` without a coroutine, on a `ready` connection: the reply's future. A
        reply that is an error is its result, not its exception; no reply within the
        timeout or a lost connection is its exception (the watchdog bounds the wait)."""
        protocol = self.protocol
        assert protocol is not None
        return self._send(protocol, command, loop)

    @staticmethod
    def _send(
        protocol: _Protocol, command: bytes, loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = loop.create_future()
        if not protocol.pending:
            loop.call_soon(protocol.flush)
        protocol.pending.append(command)
        protocol.waiting.append(future)
        protocol.sent.append(loop.time())
        if protocol.watchdog is None:
            protocol.watch(loop)
        return future

    async def _connected(self) -> _Protocol:
        """The connection, made by the first command that needs it; the others wait for
        the same one. One made after its first waiter gave up is used by the next."""
        task = self.connecting
        if task is None or (task.done() and (task.cancelled() or _unusable(task))):
            task = self.connecting = asyncio.get_running_loop().create_task(self._connect())
        # shielded: a command that gives up must not end a connection others wait for
        async with asyncio.timeout(self.timeout):
            protocol = await asyncio.shield(task)
        self.protocol = protocol
        return protocol

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        target = self.target

        def make() -> _Protocol:
            return _Protocol(self.timeout)

        try:
            if "path" in target:
                _, protocol = await loop.create_unix_connection(make, target["path"])
            else:
                _, protocol = await loop.create_connection(make, target["host"], target["port"])
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc}") from exc
        setup = []
        if target["password"] is not None:
            user = target["username"]
            credentials = (user, target["password"]) if user else (target["password"],)
            setup.append(self._send(protocol, encode("AUTH", *credentials), loop))
        if target["db"]:
            setup.append(self._send(protocol, encode("SELECT", str(target["db"])), loop))
        for reply in await asyncio.gather(*setup):
            if isinstance(reply, ResponseError):
                self._close(protocol)
                raise reply
        return protocol

    def abandon(self) -> None:
        """Drop the connection (a command on it timed out); the next command connects."""
        protocol, self.protocol = self.protocol, None
        if protocol is not None:
            self._close(protocol)

    @staticmethod
    def _close(protocol: _Protocol) -> None:
        if protocol.lost is None:  # (at once: `connection_lost` comes a turn later)
            protocol.lost = RedisConnectionError("connection to Redis given up")
        if protocol.transport is not None:
            with contextlib.suppress(RuntimeError):  # (its loop is closed)
                protocol.transport.abort()


def _unusable(task: asyncio.Task[_Protocol]) -> bool:
    """Whether a finished connecting task gave nothing usable (failed, or lost since)."""
    return task.exception() is not None or task.result().lost is not None
