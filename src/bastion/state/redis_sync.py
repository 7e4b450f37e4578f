"""Blocking Redis clients, for code that is not on a worker's event loop: the commands
(``bastion keys``, ``bastion certs``) and the ACME client, which runs in a thread.

The same settings as the workers' asyncio client (`redis_client.connect`), but with a
longer timeout: nothing here holds a request, and a certificate or a lock round trip across
machines may take longer than a limit check may wait. Imported only with ``state.redis``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from bastion.config.state_values import is_cluster, is_sentinel
from bastion.state.redis_client import host_port

if TYPE_CHECKING:
    from bastion.config.state_models import State

__all__ = ["SYNC_TIMEOUT", "connect_sync"]

SYNC_TIMEOUT = 5.0
"""Seconds a blocking call may wait (connect or command), unless ``state.timeout`` is longer."""


def connect_sync(settings: State, timeout: float | None = None) -> Any:
    """A redis-py blocking client for ``settings.redis`` (a server, a Sentinel-managed
    master, or a Cluster), with no retries of its own."""
    wait = max(settings.timeout, SYNC_TIMEOUT if timeout is None else timeout)
    redis = settings.redis
    common: dict[str, Any] = {
        "socket_timeout": wait,
        "socket_connect_timeout": wait,
        "retry": Retry(NoBackoff(), 0),
        "driver_info": None,
    }
    if is_sentinel(redis):
        from redis.sentinel import Sentinel

        nodes = [host_port(node) for node in redis.sentinel]
        sentinel = Sentinel(nodes, sentinel_kwargs=dict(common), **common)
        return sentinel.master_for(
            redis.service, username=redis.username, password=redis.password, db=redis.db
        )
    if is_cluster(redis):
        from redis.cluster import ClusterNode
        from redis.cluster import RedisCluster as Cluster

        return Cluster(
            startup_nodes=[ClusterNode(*host_port(node)) for node in redis.cluster],
            username=redis.username,
            password=redis.password,
            ssl=redis.tls,
            **common,
        )
    assert redis is not None
    return Redis.from_url(redis, **common)
