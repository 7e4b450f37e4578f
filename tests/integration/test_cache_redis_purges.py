"""Which purges reach the shared store (Redis): an operator's, and a worker's own
invalidations by exact URL; not the batches of invalidations other workers broadcast,
which may be widened to a whole host (or everything) when clients send many unsafe
requests: those drop only the receiving worker's own copies. Otherwise a client sending
cheap successful DELETEs could keep every instance's cache cold. Real redis-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from bastion.cache.purge import PurgeQueue
from bastion.config.state_models import State
from bastion.state.broadcast import FileBroadcast
from bastion.state.cache import Entry
from bastion.state.redis_cache import RedisCacheShelf, TieredCacheStore
from rediskit import RedisServer
from rediskit import redis_server as redis_server  # the fixture

URL = "http://www.example/cached/keep"


def entry(url: str) -> Entry:
    return Entry(url, url, 200, b"HTTP/1.1 200 OK\r\n", b"kept", time.time(), 60.0)


def shared_entries(redis: RedisServer) -> int:
    return len([k for k in redis.all_keys("bastion:cache:{*") if "{index}" not in k])


def test_broadcast_invalidations_spare_the_shared_store_an_operators_purge_does_not(
    tmp_path: Path, redis_server: Callable[[], RedisServer]
) -> None:
    redis = redis_server()
    settings = State.model_validate({"redis": redis.url, "timeout": "1s"})

    async def main() -> list[int]:
        store = TieredCacheStore(1 << 20, 1 << 16, RedisCacheShelf(settings, 1 << 16))
        queue = PurgeQueue(FileBroadcast(tmp_path), store)
        store.put(entry(URL))
        await asyncio.gather(*store.tasks)  # the write to Redis, in the background
        counts = [shared_entries(redis)]
        # another worker's batch, widened to the host by a flood of invalidations
        queue.received({"kind": "prefix", "value": ["http://www.example/"]})
        await asyncio.gather(*store.tasks)
        counts += [len(store), shared_entries(redis)]
        # an operator's purge of the same prefix reaches Redis too
        store.put(entry(URL))
        queue.received({"kind": "prefix", "value": "http://www.example/"})
        await asyncio.gather(*store.tasks)
        counts += [len(store), shared_entries(redis)]
        return counts

    before, here_after, shared_after, here_purged, shared_purged = asyncio.run(main())
    assert before == 1
    assert (here_after, shared_after) == (0, 1)  # this worker's copy only
    assert (here_purged, shared_purged) == (0, 0)
