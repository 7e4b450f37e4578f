"""The response cache's store: its entries, the interface, the in-memory store (LRU,
bounded in bytes).

`CacheStore` is the interface a shared store (Redis) implements too: get, put, delete,
the three purges, and the Vary names last seen per URL. Entries keep their response head
prebuilt, so a hit only adds the few fields that change (Date, Age, X-Cache,
Content-Length) and writes once. The cache logic (``bastion.cache``) decides what is
stored and for how long; this module only keeps it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

__all__ = ["ENTRY_OVERHEAD", "VARIANT_MARK", "CacheStore", "Entry", "MemoryCacheStore"]

# bookkeeping per entry beyond its head and body (objects, index slots), so the
# byte bound holds for many small entries too
ENTRY_OVERHEAD = 512
# separates a primary key from the request's values of the Vary fields
VARIANT_MARK = "\x1d"


class Entry:
    __slots__ = (
        "body",
        "etag",
        "head",
        "headers",
        "initial_age",
        "key",
        "last_modified",
        "lifetime",
        "meta",
        "size",
        "stale_if_error",
        "stale_while_revalidate",
        "status",
        "stored_at",
        "tags",
        "url",
        "vary",
    )

    def __init__(
        self,
        key: str,
        url: str,
        status: int,
        head: bytes,
        body: bytes,
        stored_at: float,
        lifetime: float,
        initial_age: float = 0.0,
        stale_while_revalidate: float = 0.0,
        stale_if_error: float = 0.0,
        etag: bytes | None = None,
        last_modified: bytes | None = None,
        tags: frozenset[str] = frozenset(),
        meta: bytes = b"",
        headers: list[tuple[bytes, bytes]] | None = None,
        vary: tuple[str, ...] = (),
    ) -> None:
        self.key = key
        self.url = url  # scheme://host/path?query, what purge by URL and prefix match
        self.status = status
        # status line and stored header lines (no Date, Age, Content-Length, X-Cache)
        self.head = head
        self.body = body
        self.stored_at = stored_at  # Unix time the response was received
        self.lifetime = lifetime
        self.initial_age = initial_age  # the Age the backend (or a cache behind it) gave
        self.stale_while_revalidate = stale_while_revalidate
        self.stale_if_error = stale_if_error
        self.etag = etag
        self.last_modified = last_modified
        self.tags = tags
        self.meta = meta  # the header lines a 304 from the cache repeats
        self.headers = headers or []  # as received, to merge a revalidation's 304 into
        self.vary = vary
        # the head counts twice: the fields are also kept as received
        self.size = 2 * len(head) + len(body) + len(key) + ENTRY_OVERHEAD

    def age(self, now: float) -> float:
        return self.initial_age + max(now - self.stored_at, 0.0)

    def staleness(self, now: float) -> float:
        """Seconds past its freshness (<= 0 while fresh)."""
        return self.age(now) - self.lifetime


class CacheStore(Protocol):
    """Where a plan's cached answers are kept."""

    # entries with a larger body are not stored (the recorder stops capturing past it)
    max_object_size: int
    # primary key -> the Vary field names of its last stored variant: a lookup adds the
    # request's values of those fields to the primary key to find the variant
    vary: dict[str, tuple[str, ...]]

    def get(self, key: str) -> Entry | None: ...

    def put(self, entry: Entry) -> None: ...

    def delete(self, key: str) -> None: ...

    def purge_url(self, url: str) -> int: ...

    def purge_prefix(self, prefix: str) -> int: ...

    def purge_tag(self, tag: str) -> int: ...

    def forget(self, kind: str, value: str) -> int:
        """Drop ``kind`` ("url", "prefix" or "tag") ``value``'s entries from this worker's
        own copy only: what another worker invalidated, and already dropped from any
        storage the workers share."""
        ...


class MemoryCacheStore:
    """Entries in one dict in least-recently-used order; the oldest go first when the
    total size passes `max_size`."""

    def __init__(self, max_size: int, max_object_size: int) -> None:
        self.max_size = max_size
        self.max_object_size = max_object_size
        self.size = 0
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.by_tag: dict[str, set[str]] = {}
        self.by_url: dict[str, set[str]] = {}
        # the Vary field names last seen for a primary key: a lookup adds the request's
        # values of those fields to find the variant
        self.vary: dict[str, tuple[str, ...]] = {}
        self.variants: dict[str, int] = {}  # stored variants per primary key

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str) -> Entry | None:
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def put(self, entry: Entry) -> None:
        if len(entry.body) > self.max_object_size or entry.size > self.max_size:
            return
        self.drop(entry.key)
        self.entries[entry.key] = entry
        self.size += entry.size
        self.by_url.setdefault(entry.url, set()).add(entry.key)
        if entry.vary:
            primary = entry.key.partition(VARIANT_MARK)[0]
            self.vary[primary] = entry.vary
            self.variants[primary] = self.variants.get(primary, 0) + 1
        for tag in entry.tags:
            self.by_tag.setdefault(tag, set()).add(entry.key)
        entries = self.entries
        while self.size > self.max_size and entries:
            self.drop(next(iter(entries)))

    def delete(self, key: str) -> None:
        entry = self.entries.pop(key, None)
        if entry is None:
            return
        self.size -= entry.size
        if entry.vary:
            # the Vary names of a URL are forgotten with its last variant
            primary = key.partition(VARIANT_MARK)[0]
            left = self.variants.get(primary, 1) - 1
            if left > 0:
                self.variants[primary] = left
            else:
                self.variants.pop(primary, None)
                self.vary.pop(primary, None)
        _unindex(self.by_url, entry.url, key)
        for tag in entry.tags:
            _unindex(self.by_tag, tag, key)

    # what evictions and purges use: a store that shares its entries overrides `delete`
    # (an operator's or the cache logic's) but not this (only this worker's copy goes)
    drop = delete

    def purge_url(self, url: str) -> int:
        keys = list(self.by_url.get(url, ()))
        for key in keys:
            self.drop(key)
        return len(keys)

    def purge_prefix(self, prefix: str) -> int:
        # rare and operator-driven: a scan is fine
        if prefix.startswith("/"):  # a path prefix, on every host
            keys = [k for k, e in self.entries.items() if _path_of(e.url).startswith(prefix)]
        else:
            keys = [k for k, e in self.entries.items() if e.url.startswith(prefix)]
        for key in keys:
            self.drop(key)
        return len(keys)

    def purge_tag(self, tag: str) -> int:
        keys = list(self.by_tag.get(tag, ()))
        for key in keys:
            self.drop(key)
        return len(keys)

    def forget(self, kind: str, value: str) -> int:
        # this class's purges, not a subclass's: they drop this worker's copy only
        if kind == "url":
            return MemoryCacheStore.purge_url(self, value)
        if kind == "prefix":
            return MemoryCacheStore.purge_prefix(self, value)
        return MemoryCacheStore.purge_tag(self, value)


def _unindex(index: dict[str, set[str]], name: str, key: str) -> None:
    keys = index.get(name)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del index[name]


def _path_of(url: str) -> str:
    start = url.find("/", url.find("//") + 2)
    return url[start:] if start >= 0 else "/"
