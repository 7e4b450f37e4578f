"""Purge requests and invalidations reach every worker through the broadcast of the
state backends (``bastion.state.broadcast``), on the topic `TOPIC`.

`bastion cache purge` (and the PURGE method) publish one message per request; each worker
that holds entries subscribes and applies each message once (the data-dir backend: one
small JSON file per message in ``<data_dir>/cache-purge/``, polled twice a second, kept a
minute).

Invalidations (a successful unsafe request drops the answers stored for its URL) reach
the other workers the same way, batched: the first of a quiet period is published at
once, the following ones are collected and published as one message per interval
(`BATCH_SECONDS`), so a flood of POSTs costs every worker one message per half second, not
one per request. Past `MAX_PENDING_URLS` distinct URLs in one interval, the batch widens to
the URLs' origins (every entry of those hosts), and past `MAX_PENDING_ORIGINS` origins to
everything: a worker may drop more than it had to, never keep what another invalidated.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from bastion.cache.key import normalise_query, url_of
from bastion.http.target import canonical_path

if TYPE_CHECKING:
    from bastion.state.broadcast import Broadcast, Message, Subscription
    from bastion.state.cache import CacheStore

log = logging.getLogger("bastion.cache")

TOPIC = "cache-purge"
BATCH_SECONDS = 0.5  # invalidations are published at most once per interval
KINDS = ("url", "prefix", "tag")
MAX_PENDING_URLS = 256  # invalidated URLs collected per interval before widening
MAX_PENDING_ORIGINS = 32  # origins ("scheme://host/") before widening to everything


def cache_url(url: str) -> str:
    """A URL spelled the way the cache keys it: lowercase scheme and host, no port,
    sorted query, the path in its canonical form (as requests' paths are)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    query = normalise_query(parts.query, "all")
    path = parts.path or "/"
    with contextlib.suppress(ValueError):  # a path no request could have: kept as given
        path = canonical_path(path)
    return url_of((parts.scheme or "http").lower(), host, path, query)


def publish(broadcast: Broadcast, kind: str, value: str | list[str]) -> None:
    """Send a purge to every worker (raises OSError when it cannot be sent). A list of
    values is a batch of invalidations."""
    if kind not in KINDS:
        raise ValueError(f"unknown purge kind {kind!r}")
    broadcast.publish(TOPIC, {"kind": kind, "value": value})


class PurgeQueue:
    def __init__(
        self, broadcast: Broadcast, store: CacheStore, allowed_from: list[str] | None = None
    ) -> None:
        self.broadcast = broadcast
        self.store = store
        self.networks = [ipaddress.ip_network(n) for n in allowed_from or []]
        self.subscription: Subscription | None = None
        self.stopped = False
        # invalidations not yet written for the other workers: URLs, or past the cap
        # their origins (prefixes), or past that everything ("/")
        self.pending: dict[str, None] = {}
        self.pending_kind = "url"
        self.flush_handle: asyncio.TimerHandle | None = None

    def allowed(self, ip: str) -> bool:
        if not self.networks:
            return False
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        address = getattr(address, "ipv4_mapped", None) or address
        return any(address in net for net in self.networks)

    def apply(self, kind: str, value: str, here_only: bool = False) -> int:
        """Purge ``value`` from the store; with ``here_only``, from this worker's copy only
        (another worker's invalidation: it dropped the shared entries itself)."""
        store = self.store
        # a URL, or a prefix that names its origin, spelled as the cache's keys are
        url = kind == "url" or (kind == "prefix" and not value.startswith("/"))
        target = cache_url(value) if url else value
        if here_only:
            return store.forget(kind, target)
        if kind == "url":
            return store.purge_url(target)
        if kind == "prefix":
            return store.purge_prefix(target)
        return store.purge_tag(target)

    def submit(self, kind: str, value: str) -> int:
        """Purge here at once, and queue it for the other workers."""
        count = self.apply(kind, value)
        self.tell_others(kind, value)
        return count

    def tell_others(self, kind: str, value: str | list[str]) -> None:
        """Queue a purge for the other workers (this one has applied it)."""
        try:
            publish(self.broadcast, kind, value)
        except OSError as exc:
            log.warning("cache purge: cannot queue for other workers: %s", exc)

    def invalidated(self, url: str) -> None:
        """`url`'s answers were dropped here: drop them in the other workers too, in the
        next batch (written at once when none was written in the last interval)."""
        pending = self.pending
        if url in pending:
            pass
        elif self.pending_kind == "url":
            pending[url] = None
            if len(pending) > MAX_PENDING_URLS:
                self._widen()
        elif self.pending_kind == "prefix":
            origin = _origin_of(url)
            if origin not in pending:
                pending[origin] = None
                if len(pending) > MAX_PENDING_ORIGINS:
                    self._widen()
        if self.flush_handle is None:  # (after `stop`, each is written at once)
            self._flush()

    def _widen(self) -> None:
        """Too many URLs (or origins) for one batch: their origins (or everything)."""
        if self.pending_kind == "url":
            origins = dict.fromkeys(_origin_of(u) for u in self.pending)
            self.pending_kind = "prefix"
            self.pending = origins
            if len(origins) <= MAX_PENDING_ORIGINS:
                return
        self.pending_kind = "all"
        self.pending = {"/": None}

    def _flush(self) -> None:
        """Write the pending invalidations as one file; check again an interval later."""
        self.flush_handle = None
        if not self.pending:
            return  # a quiet interval: the next invalidation is written at once
        kind = "url" if self.pending_kind == "url" else "prefix"
        values = list(self.pending)
        self.pending = {}
        self.pending_kind = "url"
        self.tell_others(kind, values)
        if not self.stopped:
            loop = asyncio.get_running_loop()
            self.flush_handle = loop.call_later(BATCH_SECONDS, self._flush)

    def watch(self) -> None:
        """Start listening (once this worker holds an entry: before, nothing to purge)."""
        if self.subscription is None and not self.stopped:
            self.subscription = self.broadcast.subscribe(TOPIC, self.received)

    def stop(self) -> None:
        self.stopped = True
        if self.subscription is not None:
            self.subscription.close()
            self.subscription = None
        if self.flush_handle is not None:
            self.flush_handle.cancel()
        self._flush()  # what this worker invalidated last still reaches the others

    def received(self, message: Message) -> None:
        """Apply a purge another process published."""
        kind, value = message.get("kind"), message.get("value")
        if not isinstance(kind, str) or kind not in KINDS:
            return
        if isinstance(value, str):  # an operator's purge
            count = self.apply(kind, value)
            log.info("cache purge %s %s: %d entries", kind, value, count)
        elif isinstance(value, list):  # another worker's invalidations
            # that worker dropped the entries it invalidated from shared storage (Redis)
            # itself, by exact URL; what comes here may be widened to a whole host when
            # clients send many unsafe requests, which must not empty the shared store
            count = sum(self.apply(kind, v, here_only=True) for v in value if isinstance(v, str))
            log.debug("cache invalidation by %s: %d entries", kind, count)


def _origin_of(url: str) -> str:
    """The prefix "scheme://host/" of a cache URL: every entry of that host."""
    start = url.find("/", url.find("//") + 2)
    return url[: start + 1] if start >= 0 else url + "/"
