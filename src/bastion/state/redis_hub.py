"""One worker's background link to Redis: a pub/sub connection that follows channels, and
a client for the commands that no request waits for (publishing, re-reading the API keys,
the instance heartbeat).

Separate from the limit store's `RedisConnection`: a subscribed connection can carry
nothing else, and these commands may take longer than a request may wait
(`BACKGROUND_TIMEOUT`, or ``state.timeout`` when longer). Made on the worker's running loop,
once per process (`hub_for`); a forked child makes its own.

When Redis goes away the reader notices (an error, or no answer to its PING within
`SILENCE_LIMIT`), logs it once, and connects again with a growing delay (`BACKOFF`);
each (re)connection subscribes every followed channel again and calls the `on_connect`
callbacks, so that a follower can re-read what it may have missed: pub/sub keeps no
message for a subscriber that was away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from redis.exceptions import RedisError

from bastion.config.plain import fingerprint, replaced
from bastion.config.state_values import redis_target
from bastion.state.redis_client import connect

if TYPE_CHECKING:
    from bastion.config.state_models import State

__all__ = ["BACKGROUND_TIMEOUT", "RedisHub", "Unreachable", "hub_for"]

log = logging.getLogger("bastion.state")

BACKGROUND_TIMEOUT = 2.0  # seconds a background command may take
BACKOFF = (0.1, 0.2, 0.5, 1.0, 2.0)  # seconds between two connection attempts
PING_EVERY = 2.0  # seconds between two PINGs on a quiet subscribed connection
SILENCE_LIMIT = 5.0  # seconds without any answer: the connection is taken as lost
_ERRORS = (RedisError, OSError, TimeoutError)
_T = TypeVar("_T")


class Unreachable(OSError):
    """Redis did not answer (a background command, or a publish while disconnected)."""


class RedisHub:
    def __init__(self, settings: State) -> None:
        assert settings.redis is not None
        self.settings = settings
        self.target = redis_target(settings.redis)
        self.timeout = max(settings.timeout, BACKGROUND_TIMEOUT)
        self.client: Any = connect(replaced(settings, timeout=self.timeout))
        self.channels: dict[str, list[Callable[[bytes], None]]] = {}
        self.connect_hooks: list[Callable[[], None]] = []
        self.connected = False
        self.subscribed: set[str] = set()  # on the current connection
        self.down_logged = False
        self.pubsub: Any = None
        self.reader: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[Any]] = set()  # held: a task nobody holds may vanish

    # ------------------------------------------------------------ following
    def follow(self, channel: str, deliver: Callable[[bytes], None]) -> Callable[[], None]:
        """Call ``deliver(payload)`` with each message on ``channel``; the function that
        stops it."""
        callbacks = self.channels.setdefault(channel, [])
        callbacks.append(deliver)
        if self.reader is None:
            self.reader = asyncio.get_running_loop().create_task(self._read())
        elif self.connected:
            self.spawn(self._subscribe(channel))

        def stop() -> None:
            if deliver in callbacks:
                callbacks.remove(deliver)

        return stop

    def on_connect(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` on the loop each time the subscribed connection is (re)made."""
        self.connect_hooks.append(hook)
        if self.connected:
            hook()

    async def _subscribe(self, channel: str) -> None:
        pubsub = self.pubsub
        if pubsub is None or channel in self.subscribed:
            return
        self.subscribed.add(channel)
        with contextlib.suppress(*_ERRORS):
            await pubsub.subscribe(channel)  # (a failure is the reader's to notice)

    async def _read(self) -> None:
        attempt = 0
        loop = asyncio.get_running_loop()
        while True:
            pubsub = self.client.pubsub()
            self.pubsub = pubsub
            self.subscribed = set(self.channels)
            try:
                async with asyncio.timeout(self.timeout):
                    await pubsub.subscribe(*self.subscribed)
                    # connected once the subscription is confirmed (an answer came back),
                    # not when it was sent: a frozen server accepts connections
                    while await pubsub.get_message(timeout=self.timeout) is None:
                        pass
                self._up()
                attempt = 0
                heard = pinged = loop.time()
                while True:
                    async with asyncio.timeout(PING_EVERY + 1.0):
                        message = await pubsub.get_message(timeout=PING_EVERY / 2)
                    now = loop.time()
                    if message is not None:
                        heard = now
                        if message.get("type") == "message":
                            self._deliver(message["channel"], message["data"])
                    if now - heard > SILENCE_LIMIT:
                        raise TimeoutError(f"no answer for {SILENCE_LIMIT:g}s")
                    if now - pinged >= PING_EVERY:
                        pinged = now
                        await pubsub.ping()
            except _ERRORS as exc:
                self._down(exc)
            except Exception as exc:  # a bug, or redis-py surprising us: never stop following
                log.exception("Redis %s: the subscribed connection failed", self.target)
                self._down(exc)
            finally:
                self.pubsub = None
                with contextlib.suppress(*_ERRORS, RuntimeError):
                    async with asyncio.timeout(0.5):
                        await pubsub.aclose()
            await asyncio.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
            attempt += 1

    def _deliver(self, channel: bytes | str, data: bytes | str) -> None:
        name = channel.decode() if isinstance(channel, bytes) else channel
        payload = data.encode() if isinstance(data, str) else data
        for deliver in list(self.channels.get(name, ())):
            try:
                deliver(payload)
            except Exception:  # one follower's bug must not stop the others
                log.exception("a message on %s could not be handled", name)

    def _up(self) -> None:
        self.connected = True
        for channel in self.channels:
            if channel not in self.subscribed:  # followed while this connection was made
                self.spawn(self._subscribe(channel))
        if self.down_logged:
            self.down_logged = False
            log.warning("Redis %s answers again: messages and API keys follow it", self.target)
        for hook in list(self.connect_hooks):
            hook()

    def _down(self, error: BaseException) -> None:
        self.connected = False
        if not self.down_logged:
            self.down_logged = True
            log.warning(
                "Redis %s unreachable (%s): this worker keeps the API keys it holds and "
                "misses messages until Redis is back (tried again with backoff)",
                self.target,
                _describe(error),
            )

    # ------------------------------------------------------------ commands
    async def run(self, work: Callable[[Any], Awaitable[_T]]) -> _T:
        """``work(client)`` within the background timeout; `Unreachable` on failure."""
        try:
            async with asyncio.timeout(self.timeout):
                return await work(self.client)
        except _ERRORS as exc:
            raise Unreachable(f"Redis {self.target}: {_describe(exc)}") from exc

    def publish_soon(self, channel: str, payload: str) -> None:
        """PUBLISH in the background; a failure is logged (the caller does not wait).
        Raises `Unreachable` at once while the subscribed connection is known to be down."""
        if not self.connected and self.reader is not None:
            raise Unreachable(f"Redis {self.target} is unreachable")
        self.spawn(self._publish(channel, payload))

    async def _publish(self, channel: str, payload: str) -> None:
        try:
            await self.run(lambda client: client.publish(channel, payload))
        except Unreachable as exc:
            log.warning("cannot publish on %s: %s", channel, exc)

    def spawn(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError) and not str(error):
        return "timeout"
    text = str(error) or type(error).__name__
    return text if len(text) < 200 else text[:200] + "…"


_HUBS: dict[tuple[int, str], RedisHub] = {}


def hub_for(settings: State) -> RedisHub:
    """This process's hub for these settings, made on first use (on the running loop)."""
    key = (os.getpid(), fingerprint(settings))
    hub = _HUBS.get(key)
    if hub is None:
        hub = _HUBS[key] = RedisHub(settings)
    return hub
