"""Messages to every worker of every instance, over Redis pub/sub (``state.redis``).

A topic is the channel ``<key_prefix>broadcast:<topic>``; a message travels as
``{"from": <sender>, "message": {...}}``, and a process never delivers its own messages
(it has applied them already, as with the file backend). Unlike the file backend, nothing
is kept: pub/sub delivers a message to the subscribers connected at that moment, so a
worker that was disconnected from Redis (or not started yet) never gets the messages sent
meanwhile. For purges that is the same as an entry stored after the purge; the API keys,
which must not be missed, are re-read in full at each reconnection (`redis_keys`).

A worker publishes in the background on its hub (`redis_hub`); a command (no running
loop) publishes with the blocking client and waits for Redis's answer.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from bastion.config.state_values import redis_target
from bastion.state.broadcast import Message

if TYPE_CHECKING:
    from bastion.config.state_models import State

__all__ = ["RedisBroadcast"]


class RedisBroadcast:
    def __init__(self, settings: State) -> None:
        assert settings.redis is not None
        self.settings = settings
        self.target = redis_target(settings.redis)
        self.sender = secrets.token_hex(8)  # this process's messages are not delivered here
        self._sync: Any = None

    def channel(self, topic: str) -> str:
        return f"{self.settings.key_prefix}broadcast:{topic}"

    def where(self, topic: str) -> str:
        return f"Redis {self.target} (channel {self.channel(topic)})"

    def publish(self, topic: str, message: Message) -> None:
        payload = json.dumps({"from": self.sender, "message": message})
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._publish_blocking(self.channel(topic), payload)
            return
        from bastion.state.redis_hub import hub_for

        hub_for(self.settings).publish_soon(self.channel(topic), payload)

    def _publish_blocking(self, channel: str, payload: str) -> None:
        if self._sync is None:
            from bastion.state.redis_sync import connect_sync

            self._sync = connect_sync(self.settings)
        try:
            self._sync.publish(channel, payload)
        except (RedisError, OSError, TimeoutError) as exc:
            raise OSError(f"cannot reach Redis {self.target}: {exc or 'timeout'}") from None

    def subscribe(self, topic: str, deliver: Callable[[Message], None]) -> RedisSubscription:
        from bastion.state.redis_hub import hub_for

        hub = hub_for(self.settings)
        return RedisSubscription(hub.follow(self.channel(topic), self._receiver(deliver)))

    def _receiver(self, deliver: Callable[[Message], None]) -> Callable[[bytes], None]:
        def receive(payload: bytes) -> None:
            try:
                doc = json.loads(payload)
            except ValueError:
                return
            if not isinstance(doc, dict) or doc.get("from") == self.sender:
                return
            message = doc.get("message")
            if isinstance(message, dict):
                deliver(message)

        return receive


class RedisSubscription:
    def __init__(self, stop: Callable[[], None]) -> None:
        self.stop: Callable[[], None] | None = stop

    def close(self) -> None:
        if self.stop is not None:
            self.stop()
            self.stop = None
