"""The response cache shared in Redis, behind each worker's in-memory cache.

Two levels: `TieredCacheStore` is the worker's `MemoryCacheStore` (level 1, read
synchronously on the request path, as without Redis) that also writes what it stores to
`RedisCacheShelf` (level 2) and drops from it what it purges. A lookup that misses level 1
asks level 2 (``bastion.cache.handler`` awaits `RedisCacheShelf.find`, bounded by
``state.timeout``, behind the connection's breaker); what it finds is kept in level 1, so
the next request of that worker is answered from memory. A timeout or an error is a miss.

Keys (``P`` is ``state.key_prefix``; ``H(x)`` the first 16 hex digits of SHA-256):

- ``P cache:{H(primary)}:H(key)`` — a hash, one entry: head, body, the fields a 304 and a
  revalidation need, and its freshness. The hash tag is its primary key's, so the variants
  of a URL and their Vary names live on one Cluster slot.
- ``P cache:{H(primary)}:vary`` — the Vary names of the primary key's last stored variant.
- ``P cache:{index}:url:<url>`` and ``P cache:{index}:tag:<tag>`` — sets of entry keys, for
  the purges by URL and by tag.
- ``P cache:{index}:urls`` — every stored URL in a sorted set of equal scores, so a purge by
  URL prefix is a ``ZRANGEBYLEX`` (no SCAN); ``P cache:{index}:paths`` the same for
  ``path NUL url``, for a purge by path prefix on every host; ``P cache:{index}:expiry`` each
  URL's latest expiry, from which the URL indexes are pruned on writes.

Every entry expires on its own (``EXPIRE``): when it is neither fresh nor within its
stale windows any more, and, with a validator (ETag, Last-Modified), a while later still so
that it can be revalidated with a 304. The index sets expire with their latest entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bastion.state.cache import VARIANT_MARK, Entry, MemoryCacheStore
from bastion.state.limits import StoreUnavailable
from bastion.state.redis_client import RedisConnection

if TYPE_CHECKING:
    from bastion.config.state_models import State

__all__ = ["RedisCacheShelf", "TieredCacheStore"]

log = logging.getLogger("bastion.cache")

# how long past its stale windows an entry with a validator stays, to be revalidated:
# as long as it was fresh, within these bounds
REVALIDATE_MIN = 60.0
REVALIDATE_MAX = 86400.0
PRUNE_EVERY = 64  # writes between two prunings of the URL indexes (per worker)
PRUNE_BATCH = 64  # expired URLs dropped from the indexes per pruning

# the URLs whose entries have all expired leave the prefix indexes
_PRUNE = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, url in ipairs(gone) do
  local slashes = string.find(url, '//', 1, true)
  local start = string.find(url, '/', (slashes or -1) + 2, true)
  local path = start and string.sub(url, start) or '/'
  redis.call('ZREM', KEYS[2], url)
  redis.call('ZREM', KEYS[3], path .. '\\0' .. url)
  redis.call('ZREM', KEYS[1], url)
end
return #gone
"""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _path_of(url: str) -> str:
    start = url.find("/", url.find("//") + 2)
    return url[start:] if start >= 0 else "/"


def shared_ttl(entry: Entry, now: float) -> int:
    """Seconds the entry is worth keeping in Redis: its remaining freshness, its stale
    windows, and with a validator some more to revalidate it (0: not worth storing)."""
    fresh = max(entry.lifetime - entry.age(now), 0.0)
    keep = fresh + max(entry.stale_while_revalidate, entry.stale_if_error)
    if entry.etag is not None or entry.last_modified is not None:
        keep += min(max(entry.lifetime, REVALIDATE_MIN), REVALIDATE_MAX)
    return math.ceil(keep) if keep >= 1 else 0


def _fields(entry: Entry) -> dict[str, bytes]:
    return {
        "k": entry.key.encode("utf-8", "surrogateescape"),
        "u": entry.url.encode("utf-8", "surrogateescape"),
        "s": b"%d" % entry.status,
        "h": entry.head,
        "b": entry.body,
        "m": entry.meta,
        "f": b"".join(n + b": " + v + b"\r\n" for n, v in entry.headers),
        "t": repr(entry.stored_at).encode(),
        "l": repr(entry.lifetime).encode(),
        "a": repr(entry.initial_age).encode(),
        "w": repr(entry.stale_while_revalidate).encode(),
        "e": repr(entry.stale_if_error).encode(),
        "g": entry.etag if entry.etag is not None else b"",
        "d": entry.last_modified if entry.last_modified is not None else b"",
        "T": " ".join(sorted(entry.tags)).encode("utf-8", "surrogateescape"),
        "v": ",".join(entry.vary).encode("latin-1"),
    }


def _entry(raw: dict[bytes, bytes], key: str) -> Entry | None:
    """The entry a hash holds, if it is the one for `key` (and whole)."""
    try:
        if raw[b"k"].decode("utf-8", "surrogateescape") != key:
            return None  # another key with the same digest
        headers = []
        for line in raw[b"f"].split(b"\r\n"):
            if line:
                name, _, value = line.partition(b": ")
                headers.append((name, value))
        tags = raw[b"T"].decode("utf-8", "surrogateescape")
        vary = raw[b"v"].decode("latin-1")
        return Entry(
            key,
            raw[b"u"].decode("utf-8", "surrogateescape"),
            int(raw[b"s"]),
            raw[b"h"],
            raw[b"b"],
            float(raw[b"t"]),
            float(raw[b"l"]),
            float(raw[b"a"]),
            float(raw[b"w"]),
            float(raw[b"e"]),
            raw[b"g"] or None,
            raw[b"d"] or None,
            frozenset(tags.split()) if tags else frozenset(),
            raw[b"m"],
            headers,
            tuple(vary.split(",")) if vary else (),
        )
    except (KeyError, ValueError, UnicodeDecodeError):
        return None  # written by another version, or cut short: a miss


class RedisCacheShelf:
    """The entries in Redis that every instance reads (level 2)."""

    def __init__(self, settings: State, max_object_size: int) -> None:
        self.max_object_size = max_object_size  # larger bodies stay in level 1 only
        self.prefix = settings.key_prefix + "cache:"
        index = self.prefix + "{index}:"
        self.urls = index + "urls"
        self.paths = index + "paths"
        self.expiry = index + "expiry"
        self.url_set = index + "url:"
        self.tag_set = index + "tag:"
        self.connection = RedisConnection(settings, self._changed, quiet=True)
        self.writes = 0

    def _changed(self, down: bool) -> None:
        """Logged once per transition (the breaker tells)."""
        connection = self.connection
        if down:
            log.warning(
                "response cache: Redis %s unavailable: lookups there are misses and each "
                "worker keeps its entries to itself until it answers again (tried every %gs)",
                connection.target,
                connection.breaker.open_for,
            )
        else:
            log.warning(
                "response cache: Redis %s answers again: entries are shared", connection.target
            )

    def entry_key(self, key: str) -> str:
        primary = key.partition(VARIANT_MARK)[0]
        return f"{self.prefix}{{{_digest(primary)}}}:{_digest(key)}"

    def vary_key(self, primary: str) -> str:
        return f"{self.prefix}{{{_digest(primary)}}}:vary"

    # ------------------------------------------------------------------ reads
    async def find(self, primary: str, variant: Callable[[tuple[str, ...]], str]) -> Entry | None:
        """The stored entry for `primary` (`variant(vary)` names the request's variant when
        it varies), or None: not there, or Redis did not answer in time."""
        try:
            return await self.connection.call(lambda client: self._find(client, primary, variant))
        except StoreUnavailable:
            return None

    async def _find(
        self, client: Any, primary: str, variant: Callable[[tuple[str, ...]], str]
    ) -> Entry | None:
        pipe = client.pipeline(transaction=False)
        pipe.get(self.vary_key(primary))
        pipe.hgetall(self.entry_key(primary))
        names, raw = await pipe.execute()
        if names:
            key = variant(tuple(names.decode("latin-1").split(",")))
            if key == primary:
                return _entry(raw, key) if raw else None
            raw = await client.hgetall(self.entry_key(key))
        else:
            key = primary
        return _entry(raw, key) if raw else None

    # ----------------------------------------------------------------- writes
    async def put(self, entry: Entry) -> None:
        ttl = shared_ttl(entry, time.time())
        if ttl <= 0 or len(entry.body) > self.max_object_size:
            return
        self.writes += 1
        prune = self.writes % PRUNE_EVERY == 1
        # a failure is logged by the breaker's transitions; this worker keeps its copy
        with contextlib.suppress(StoreUnavailable):
            await self.connection.call(lambda client: self._put(client, entry, ttl, prune))

    async def _put(self, client: Any, entry: Entry, ttl: int, prune: bool) -> None:
        key = self.entry_key(entry.key)
        primary = entry.key.partition(VARIANT_MARK)[0]
        url = entry.url
        expires = time.time() + ttl
        pipe = client.pipeline(transaction=False)
        pipe.delete(key)
        pipe.hset(key, mapping=_fields(entry))
        pipe.expire(key, ttl)
        if entry.vary:
            pipe.set(self.vary_key(primary), ",".join(entry.vary), ex=ttl)
        else:
            pipe.delete(self.vary_key(primary))  # the backend stopped varying it
        for index in [self.url_set + url, *(self.tag_set + t for t in entry.tags)]:
            pipe.sadd(index, key)
            pipe.expire(index, ttl, nx=True)
            pipe.expire(index, ttl, gt=True)
        pipe.zadd(self.urls, {url: 0})
        pipe.zadd(self.paths, {_path_of(url) + "\0" + url: 0})
        pipe.zadd(self.expiry, {url: expires}, gt=True)
        await pipe.execute()
        if prune:
            script = self.connection.script(_PRUNE)
            await script(keys=[self.expiry, self.urls, self.paths], args=[time.time(), PRUNE_BATCH])

    async def delete(self, key: str) -> None:
        with contextlib.suppress(StoreUnavailable):
            await self.connection.call(lambda client: client.delete(self.entry_key(key)))

    # ----------------------------------------------------------------- purges
    async def purge_url(self, url: str) -> int:
        return await self._purge_urls([url])

    async def purge_prefix(self, prefix: str) -> int:
        """Every URL under `prefix`: a path ("/docs/", on every host) or an URL prefix."""

        async def urls(client: Any) -> list[str]:
            start = prefix.encode("utf-8", "surrogateescape")
            span = (b"[" + start, b"[" + start + b"\xff")
            if prefix.startswith("/"):
                found = await client.zrangebylex(self.paths, *span)
                return [m.partition(b"\0")[2].decode("utf-8", "surrogateescape") for m in found]
            found = await client.zrangebylex(self.urls, *span)
            return [m.decode("utf-8", "surrogateescape") for m in found]

        try:
            found = await self.connection.call(urls)
        except StoreUnavailable:
            return 0
        return await self._purge_urls(found)

    async def purge_tag(self, tag: str) -> int:
        index = self.tag_set + tag

        async def purge(client: Any) -> int:
            keys = await client.smembers(index)
            return await self._delete_all(client, list(keys), [index])

        try:
            return await self.connection.call(purge)
        except StoreUnavailable:
            return 0

    async def _purge_urls(self, urls: list[str]) -> int:
        if not urls:
            return 0

        async def purge(client: Any) -> int:
            pipe = client.pipeline(transaction=False)
            for url in urls:
                pipe.smembers(self.url_set + url)
            found = await pipe.execute()
            keys = [k for members in found for k in members]
            done = await self._delete_all(client, keys, [self.url_set + u for u in urls])
            pipe = client.pipeline(transaction=False)
            for url in urls:
                pipe.zrem(self.urls, url)
                pipe.zrem(self.paths, _path_of(url) + "\0" + url)
                pipe.zrem(self.expiry, url)
            await pipe.execute()
            return done

        try:
            return await self.connection.call(purge)
        except StoreUnavailable:
            return 0

    async def _delete_all(self, client: Any, keys: list[Any], indexes: list[str]) -> int:
        """Delete entries one command each (they live on different Cluster slots)."""
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.delete(key)
        for index in indexes:
            pipe.delete(index)
        results = await pipe.execute()
        return sum(results[: len(keys)])


class TieredCacheStore(MemoryCacheStore):
    """A worker's in-memory cache that shares what it stores through Redis and drops from
    Redis what it purges. Writes to Redis run in the background: a request never waits
    for them."""

    def __init__(self, max_size: int, max_object_size: int, shared: RedisCacheShelf) -> None:
        super().__init__(max_size, max_object_size)
        self.shared = shared
        self.tasks: set[asyncio.Task[Any]] = set()

    def _later(self, work: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            work.close()  # compiled off a loop (a check): nothing to share yet
            return
        task = loop.create_task(work)
        self.tasks.add(task)  # (a reference: a task nobody holds may be collected)
        task.add_done_callback(self.tasks.discard)

    def keep(self, entry: Entry) -> None:
        """Keep an entry read from Redis in this worker's memory (not written back)."""
        MemoryCacheStore.put(self, entry)

    def put(self, entry: Entry) -> None:
        MemoryCacheStore.put(self, entry)
        if len(entry.body) <= self.shared.max_object_size:
            self._later(self.shared.put(entry))

    def delete(self, key: str) -> None:
        MemoryCacheStore.delete(self, key)
        self._later(self.shared.delete(key))

    def purge_url(self, url: str) -> int:
        self._later(self.shared.purge_url(url))
        return MemoryCacheStore.purge_url(self, url)

    def purge_prefix(self, prefix: str) -> int:
        self._later(self.shared.purge_prefix(prefix))
        return MemoryCacheStore.purge_prefix(self, prefix)

    def purge_tag(self, tag: str) -> int:
        self._later(self.shared.purge_tag(tag))
        return MemoryCacheStore.purge_tag(self, tag)
