"""A proxy route with a cache in front: lookups, stores, revalidation, stale serving
and request coalescing. The proxy handler does every upstream exchange; this object
decides which exchanges happen and answers hits itself."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from bastion.cache.answer import BYPASS, HIT, MISS, REVALIDATED, STALE, relay, serve
from bastion.cache.capture import CaptureClient
from bastion.cache.conditional import conditional_request, refreshed_headers
from bastion.cache.consumer import CONSUMER_MARK
from bastion.cache.entries import build_entry, field_map
from bastion.cache.invalidate import SAFE_METHODS, Invalidator
from bastion.cache.key import (
    KeyRules,
    forwarded_part,
    header_values,
    normalise_query,
    primary_key,
    url_of,
    variant_key,
)
from bastion.cache.policy import Rules, decide
from bastion.cache.recorder import Recorder
from bastion.clock import SYSTEM_CLOCK, Clock
from bastion.http.router import Handler

if TYPE_CHECKING:
    from bastion.cache.consumer import ConsumerKey
    from bastion.cache.purge import PurgeQueue
    from bastion.http.downstream import Downstream
    from bastion.http.request import Request
    from bastion.proxy.handler import ProxyHandler
    from bastion.state.cache import CacheStore, Entry
    from bastion.state.redis_cache import RedisCacheShelf

log = logging.getLogger("bastion.cache")


class CachingHandler(Handler):
    __slots__ = (
        "broadcast",
        "consumers",
        "inflight",
        "key_rules",
        "lock_timeout",
        "now",
        "proxy",
        "purge",
        "refreshing",
        "rules",
        "shared",
        "store",
        "tasks",
    )

    def __init__(
        self,
        proxy: ProxyHandler,
        store: CacheStore,
        rules: Rules,
        key_rules: KeyRules,
        lock_timeout: float,
        purge: PurgeQueue | None,
        consumers: ConsumerKey | None = None,
        broadcast: bool = False,
        clock: Clock = SYSTEM_CLOCK,
        shared: RedisCacheShelf | None = None,
    ) -> None:
        self.proxy = proxy
        self.store = store
        self.rules = rules
        self.key_rules = key_rules
        self.lock_timeout = lock_timeout
        self.purge = purge  # the worker's purge queue (the PURGE method, the watcher)
        # an authenticated route's rule for keeping answers per consumer (None: shared)
        self.consumers = consumers
        self.broadcast = broadcast  # several workers: invalidations reach the others too
        # key → requests waiting for the one backend request already under way
        self.inflight: dict[str, list[Waiter]] = {}
        self.refreshing: set[str] = set()  # keys with a background refresh running
        # wall-clock seconds (ages and expiry compare with HTTP dates), bound once so
        # that reading it costs what `time.time()` did
        # read as `now = self.now` then `now()`: Python 3.11 does not specialise a call of
        # a function kept on the instance (`self.now()`), which costs ~130 instructions
        self.now = clock.time
        # the entries every instance shares (cache store: redis): asked on a miss here
        self.shared = shared
        self.tasks: set[asyncio.Task[None]] = set()  # lookups in Redis under way

    # ----------------------------------------------------------------- lookup
    def handle(
        self, client: Downstream, req: Request, may_wait: bool = True, looked: bool = False
    ) -> None:
        method = req.method
        if method != "GET" and method != "HEAD":
            if method == "PURGE" and self.purge is not None and self.purge.allowed(req.client_ip):
                self._purge_request(client, req)
                return
            req.extra_head += BYPASS
            req.cache = "BYPASS"
            if method in SAFE_METHODS:
                self.proxy.handle(client, req)
            else:  # its success makes the stored answers of its URL stale
                self.proxy.handle(client, req, Invalidator(self, client.scheme.decode(), req))
            return
        if req.has_body:
            req.extra_head += BYPASS
            req.cache = "BYPASS"
            self.proxy.handle(client, req)
            return
        key_rules = self.key_rules
        url = self.key_url(client.scheme.decode(), req.host, req.path, req.query)
        extra = header_values(req.headers, key_rules.headers) if key_rules.headers else ""
        forwarded = ""
        if req.xfh is not None or req.xfp is not None:  # (rare: checked before `trusted`)
            trusted = self.proxy.trusted
            if trusted is not None and trusted(req.client_ip):
                # the backend builds its links from these: an answer made for one
                # forwarded host or scheme is not the answer for another
                forwarded = forwarded_part(req.xfp, req.xfh)
        primary = primary_key(url, extra, req.host_header, forwarded)
        consumers = self.consumers
        own = None  # the primary key of the request's consumer (authenticated routes)
        if consumers is None:  # (the common case, inline)
            store = self.store
            vary = store.vary.get(primary)
            key = variant_key(primary, vary, req.headers) if vary else primary
            entry = store.get(key)
        else:
            own = consumers.own_primary(primary, req)
            if own is None:  # no identity: only answers shared by everybody
                key, entry = self._find(primary, req)
            else:
                key, entry = self._find(own, req)
                if entry is None and not consumers.always:
                    shared_key, shared = self._find(primary, req)
                    if shared is not None:
                        key, entry = shared_key, shared
        clock = self.now
        now = clock()
        if entry is not None:
            staleness = entry.staleness(now)
            if staleness <= 0:
                serve(client, req, entry, HIT, now)
                return
            if staleness <= entry.stale_while_revalidate:
                serve(client, req, entry, STALE, now)
                if key not in self.refreshing:
                    self.refreshing.add(key)
                    self._revalidate(None, req, key, primary, own, url, entry, client)
                return
        if may_wait:
            waiters = self.inflight.get(key)
            if waiters is not None:
                waiters.append(Waiter(self, client, req, key))
                return
        if entry is not None:
            self.inflight.setdefault(key, [])
            self._revalidate(client, req, key, primary, own, url, entry, client)
            return
        if self.shared is not None and not looked:
            self._look_shared(client, req, key, primary, own, may_wait)
            return
        req.extra_head += MISS
        req.cache = "MISS"
        if method == "HEAD":
            self.proxy.handle(client, req)  # a HEAD answer has no body to store
            return
        leader = may_wait and key not in self.inflight
        if leader:
            self.inflight[key] = []
        recorder = Recorder(self, key if leader else None, primary, own, url, req, now)
        self.proxy.handle(client, req, recorder)

    def _look_shared(
        self,
        client: Downstream,
        req: Request,
        key: str,
        primary: str,
        own: str | None,
        may_wait: bool,
    ) -> None:
        """A miss in this worker's memory: ask Redis, then go on with what it had (the
        requests for the same key meanwhile wait for this one, as for a backend request)."""
        if may_wait:
            self.inflight[key] = []
        if self.purge is not None:
            # the entries in Redis are this worker's concern even before it holds any:
            # a purge published while no worker is listening would leave them there
            self.purge.watch()
        consumers = self.consumers
        if own is None:
            candidates = [primary]
        elif consumers is not None and consumers.always:
            candidates = [own]
        else:
            candidates = [own, primary]
        task = client.loop.create_task(self._shared_lookup(client, req, key, candidates, may_wait))
        self.tasks.add(task)  # (a reference: a task nobody holds may be collected)
        task.add_done_callback(self.tasks.discard)

    async def _shared_lookup(
        self, client: Downstream, req: Request, key: str, candidates: list[str], leader: bool
    ) -> None:
        shared = self.shared
        assert shared is not None
        store = self.store
        found = None
        try:
            headers = req.headers
            for candidate in candidates:

                def variant(vary: tuple[str, ...], candidate: str = candidate) -> str:
                    return variant_key(candidate, vary, headers)

                found = await shared.find(candidate, variant)
                if found is not None:
                    break
            if found is not None:
                store.keep(found)  # type: ignore[attr-defined]  # (a TieredCacheStore)
        except Exception:
            log.exception("request %s: cache lookup in Redis failed", req.request_id)
        waiters = self.inflight.pop(key, None) if leader else None
        try:
            if client.open:
                # from memory now when Redis had it, else from the backend
                self.handle(client, req, leader, looked=True)
        except Exception:
            log.exception("request %s failed in the cache", req.request_id)
            if not client.resp_started:
                client.problem(req, 500)
        if waiters:
            pending = self.inflight.get(key)
            if pending is not None:  # they wait for the backend request just made
                pending.extend(waiters)
            else:
                for waiter in waiters:
                    waiter.wake()

    def _find(self, primary: str, req: Request) -> tuple[str, Entry | None]:
        """The key of the request's variant of `primary`, and its entry if stored."""
        store = self.store
        vary = store.vary.get(primary)
        key = variant_key(primary, vary, req.headers) if vary else primary
        return key, store.get(key)

    # ----------------------------------------------------------- revalidation
    def _revalidate(
        self,
        client: Downstream | None,
        req: Request,
        key: str,
        primary: str,
        own: str | None,
        url: str,
        entry: Entry,
        origin: Downstream,
    ) -> None:
        """Ask the backend whether `entry` still holds. With `client`, answer it
        from the outcome; without, refresh in the background."""
        sub = conditional_request(req, entry)
        clock = self.now
        now = clock()
        recorder = Recorder(self, None, primary, own, url, sub, now)

        def done(cap: CaptureClient) -> None:
            self.refreshing.discard(key)
            try:
                if client is not None:
                    self._answer_revalidation(client, req, cap, entry, recorder, key)
                elif cap.status == 304:
                    self._refresh(entry, cap.head, self.now())
            except Exception:
                log.exception("request %s failed in cache revalidation", req.request_id)
                if client is not None and not client.resp_started:
                    client.problem(req, 500)
            finally:
                if client is not None:
                    self.release(key)

        capture = CaptureClient(origin, done)
        self.proxy.handle(capture, sub, recorder)

    def _answer_revalidation(
        self,
        client: Downstream,
        req: Request,
        cap: CaptureClient,
        entry: Entry,
        recorder: Recorder,
        key: str,
    ) -> None:
        clock = self.now
        now = clock()
        failed = cap.error != 0 or cap.status >= 500
        if failed and entry.staleness(now) <= entry.stale_if_error:
            serve(client, req, entry, STALE, now)
            return
        if cap.status == 304 and not cap.error:
            serve(client, req, self._refresh(entry, cap.head, now), REVALIDATED, now)
            return
        if recorder.stored is not None:
            serve(client, req, recorder.stored, MISS, now)
            return
        req.extra_head += MISS
        req.cache = "MISS"
        if cap.error:
            client.problem(req, cap.error)
            return
        relay(client, req, cap)

    def _refresh(self, entry: Entry, head_304: bytes, now: float) -> Entry:
        """A 304 from the backend: the stored body with the updated fields, fresh again."""
        headers = refreshed_headers(entry.headers, head_304)
        fields = field_map(headers)
        decision = decide("GET", entry.status, fields, self.rules, False, now)
        status_line = entry.head[: entry.head.index(b"\r\n") + 2]
        fresh = build_entry(
            entry.key,
            entry.url,
            status_line,
            entry.status,
            headers,
            fields,
            entry.body,
            decision,
            now,
        )
        consumers = self.consumers
        # an entry shared by every consumer stays shared only while the backend says so
        private = (
            consumers is not None
            and CONSUMER_MARK not in entry.key
            and (consumers.always or not decision.shared)
        )
        if decision.store and not private:
            self.store.put(fresh)
        else:
            self.store.delete(entry.key)
        return fresh

    # ------------------------------------------------------------ coalescing
    def release(self, key: str) -> None:
        """The request the waiters of `key` were waiting for is over: each looks again
        (a hit now, or its own backend request when the answer was not stored)."""
        waiters = self.inflight.pop(key, None)
        if not waiters:
            return
        for waiter in waiters:
            waiter.wake()

    def stored(self, primary: str, entry: Entry) -> None:
        store = self.store
        if not entry.vary:
            store.vary.pop(primary, None)  # the backend stopped varying this URL
        store.put(entry)
        if self.purge is not None:
            self.purge.watch()

    # ------------------------------------------------------------ invalidation
    def invalidate(self, urls: list[str]) -> None:
        """Drop every stored answer (all variants, all consumers) of `urls`, here and,
        with several workers, in the others too (RFC 9111 §4.4)."""
        purge = self.purge
        for url in dict.fromkeys(urls):
            self.store.purge_url(url)
            if self.broadcast and purge is not None:
                purge.invalidated(url)  # batched: at most one file per poll interval

    # ------------------------------------------------------------------ purge
    def key_url(self, scheme: str, host: str, path: str, query: str) -> str:
        """The URL as this route spells it in keys: the query normalised by the route's
        rules, without the API key's parameter. Lookups, invalidations and PURGE all
        use it, so that each finds what the others stored."""
        query = normalise_query(query, self.key_rules.query) if query else ""
        consumers = self.consumers
        if query and consumers is not None:
            query = consumers.key_query(query)
        return url_of(scheme, host, path, query)

    def _purge_request(self, client: Downstream, req: Request) -> None:
        assert self.purge is not None
        url = self.key_url(client.scheme.decode(), req.host, req.path, req.query)
        count = self.purge.submit("url", url)
        body = b'{"purged": %d}' % count
        client.respond(req, 200, body, b"application/json")


class Waiter:
    """A request waiting for the same key's backend request (coalescing)."""

    __slots__ = ("client", "gone", "handler", "key", "req", "timer")

    def __init__(self, handler: CachingHandler, client: Downstream, req: Request, key: str) -> None:
        self.handler = handler
        self.client = client
        self.req = req
        self.key = key
        self.gone = False
        client.set_producer(self)  # told when the client leaves while waiting
        self.timer = client.loop.call_later(handler.lock_timeout, self.timed_out)

    def pause_producing(self) -> None:
        pass

    def resume_producing(self) -> None:
        pass

    def client_gone(self) -> None:
        self.gone = True
        self.timer.cancel()

    def timed_out(self) -> None:
        waiters = self.handler.inflight.get(self.key)
        if waiters is not None and self in waiters:
            waiters.remove(self)
        self.wake()

    def wake(self) -> None:
        self.timer.cancel()
        if self.gone:
            return
        self.gone = True
        client = self.client
        if client.producer is self:
            client.set_producer(None)
        # runs inside another request's exchange or a timer: a failure here is this
        # request's alone
        try:
            self.handler.handle(client, self.req, may_wait=False)
        except Exception:
            log.exception("request %s failed in the cache", self.req.request_id)
            if not client.resp_started:
                client.problem(self.req, 500)
