"""A worker's part in a cluster of instances sharing Redis (``state.redis``): it reloads its
own config file when ``bastion reload --all`` asks every instance to, and it writes its
instance's heartbeat (id, config hash, version) for ``bastion status`` and the admin API.

Nothing here runs, nor is redis-py imported, without ``state.redis``. The link is made
once, when the worker starts: a reload that adds, changes or removes ``state.redis``
takes effect for it at the next restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bastion.config import LoadedConfig
    from bastion.config.state_models import State
    from bastion.state.broadcast import Broadcast, Message, Subscription

__all__ = ["RELOAD_TOPIC", "ClusterLink"]

log = logging.getLogger("bastion.server")

RELOAD_TOPIC = "reload"


class ClusterLink:
    def __init__(
        self,
        settings: State,
        broadcast: Broadcast,
        instance_pid: int,
        loaded: Callable[[], LoadedConfig],
        reload: Callable[[], Coroutine[Any, Any, bool]],
    ) -> None:
        from bastion.state.instances import Identity, hash_name
        from bastion.state.redis_hub import hub_for

        self.hub = hub_for(settings)
        self.name = hash_name(settings.key_prefix)
        self.identity = Identity(instance_pid, loaded)
        self.identity.config_hash()  # the file as it was at start
        self.reload = reload
        self.reloads: set[asyncio.Task[bool]] = set()
        self.subscription: Subscription = broadcast.subscribe(RELOAD_TOPIC, self._asked)
        self.heartbeat = asyncio.get_running_loop().create_task(self._beat())

    def _asked(self, message: Message) -> None:
        log.info(
            "reload asked for every instance (bastion reload --all on %s, pid %s)",
            message.get("host"),
            message.get("pid"),
        )
        task = asyncio.get_running_loop().create_task(self._reload())
        self.reloads.add(task)
        task.add_done_callback(self.reloads.discard)

    async def _reload(self) -> bool:
        from bastion.state.instances import beat
        from bastion.state.redis_hub import Unreachable

        done = await self.reload()
        with contextlib.suppress(Unreachable):  # the new config hash, at once
            await beat(self.hub, self.name, self.identity)
        return done

    async def _beat(self) -> None:
        from bastion.state.instances import HEARTBEAT_SECONDS, beat
        from bastion.state.redis_hub import Unreachable

        while True:
            with contextlib.suppress(Unreachable):  # the hub logs Redis going away
                await beat(self.hub, self.name, self.identity)
            await asyncio.sleep(HEARTBEAT_SECONDS)

    def close(self) -> None:
        self.subscription.close()
        self.heartbeat.cancel()


def reload_message() -> Message:
    """What ``bastion reload --all`` publishes: who asked, for the instances' logs."""
    import socket

    return {"host": socket.gethostname(), "pid": os.getpid()}
