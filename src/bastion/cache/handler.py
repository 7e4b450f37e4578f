"""A proxy route with a cache in front: lookups, stores, revalidation, stale serving
and request coalescing. The proxy handler does every upstream exchange; this object
decides which exchanges happen and answers hits itself."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from bastion.cache.capture import CaptureClient
from bastion.cache.conditional import conditional_request, not_modified, refreshed_headers
from bastion.cache.entries import build_entry, field_map
from bastion.cache.key import (
    KeyRules,
    header_values,
    normalise_query,
    parse_vary,
    primary_key,
    url_of,
    variant_key,
)
from bastion.cache.policy import Rules, decide
from bastion.http1.request import BODY_LENGTH, BODY_NONE

if TYPE_CHECKING:
    from bastion.cache.purge import PurgeQueue
    from bastion.cache.store import Entry, MemoryStore
    from bastion.http1.request import Request
    from bastion.proxy.handler import ProxyHandler

log = logging.getLogger("bastion.cache")

HIT = b"X-Cache: HIT\r\n"
MISS = b"X-Cache: MISS\r\n"
STALE = b"X-Cache: STALE\r\n"
REVALIDATED = b"X-Cache: REVALIDATED\r\n"
BYPASS = b"X-Cache: BYPASS\r\n"
_NOT_MODIFIED = b"HTTP/1.1 304 Not Modified\r\n"
_AUTHORIZATION = b"authorization"


class CachingHandler:
    __slots__ = (
        "inflight",
        "key_rules",
        "lock_timeout",
        "proxy",
        "purge",
        "refreshing",
        "rules",
        "store",
    )

    def __init__(
        self,
        proxy: ProxyHandler,
        store: MemoryStore,
        rules: Rules,
        key_rules: KeyRules,
        lock_timeout: float,
        purge: PurgeQueue | None,
    ) -> None:
        self.proxy = proxy
        self.store = store
        self.rules = rules
        self.key_rules = key_rules
        self.lock_timeout = lock_timeout
        self.purge = purge  # the worker's purge queue (the PURGE method, the watcher)
        # key → requests waiting for the one backend request already under way
        self.inflight: dict[str, list[Waiter]] = {}
        self.refreshing: set[str] = set()  # keys with a background refresh running

    # ----------------------------------------------------------------- lookup
    def handle(self, client: Any, req: Request, may_wait: bool = True) -> None:
        method = req.method
        if method != "GET" and method != "HEAD":
            if method == "PURGE" and self.purge is not None and self.purge.allowed(req.client_ip):
                self._purge_request(client, req)
                return
            req.extra_head += BYPASS
            self.proxy.handle(client, req)
            return
        if req.has_body:
            req.extra_head += BYPASS
            self.proxy.handle(client, req)
            return
        key_rules = self.key_rules
        query = normalise_query(req.query, key_rules.query) if req.query else ""
        url = url_of(client.scheme.decode(), req.host, req.path, query)
        extra = header_values(req.headers, key_rules.headers) if key_rules.headers else ""
        primary = primary_key(url, extra)
        store = self.store
        vary = store.vary.get(primary)
        key = variant_key(primary, vary, req.headers) if vary else primary
        entry = store.get(key)
        now = time.time()
        if entry is not None:
            staleness = entry.staleness(now)
            if staleness <= 0:
                serve(client, req, entry, HIT, now)
                return
            if staleness <= entry.stale_while_revalidate:
                serve(client, req, entry, STALE, now)
                if key not in self.refreshing:
                    self.refreshing.add(key)
                    self._revalidate(None, req, key, primary, url, entry, client)
                return
        if may_wait:
            waiters = self.inflight.get(key)
            if waiters is not None:
                waiters.append(Waiter(self, client, req, key))
                return
        if entry is not None:
            self.inflight.setdefault(key, [])
            self._revalidate(client, req, key, primary, url, entry, client)
            return
        req.extra_head += MISS
        if method == "HEAD":
            self.proxy.handle(client, req)  # a HEAD answer has no body to store
            return
        leader = may_wait and key not in self.inflight
        if leader:
            self.inflight[key] = []
        recorder = Recorder(self, key if leader else None, primary, url, req, now)
        self.proxy.handle(client, req, recorder)

    # ----------------------------------------------------------- revalidation
    def _revalidate(
        self,
        client: Any,
        req: Request,
        key: str,
        primary: str,
        url: str,
        entry: Entry,
        origin: Any,
    ) -> None:
        """Ask the backend whether `entry` still holds. With `client`, answer it
        from the outcome; without, refresh in the background."""
        sub = conditional_request(req, entry)
        now = time.time()
        recorder = Recorder(self, None, primary, url, sub, now)

        def done(cap: CaptureClient) -> None:
            self.refreshing.discard(key)
            try:
                if client is not None:
                    self._answer_revalidation(client, req, cap, entry, recorder, key)
                elif cap.status == 304:
                    self._refresh(entry, cap.head, time.time())
            except Exception:
                log.exception("request %s failed in cache revalidation", req.request_id)
                if client is not None and not client.resp_started:
                    client.problem(req, 500)
            finally:
                if client is not None:
                    self.release(key)

        capture: Any = CaptureClient(origin.ctx, origin.scheme, done)
        self.proxy.handle(capture, sub, recorder)

    def _answer_revalidation(
        self,
        client: Any,
        req: Request,
        cap: CaptureClient,
        entry: Entry,
        recorder: Recorder,
        key: str,
    ) -> None:
        now = time.time()
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
        if decision.store:
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

    # ------------------------------------------------------------------ purge
    def _purge_request(self, client: Any, req: Request) -> None:
        assert self.purge is not None
        url = url_of(client.scheme.decode(), req.host, req.path, normalise_query(req.query, "all"))
        count = self.purge.submit("url", url)
        body = b'{"purged": %d}' % count
        client.respond(req, 200, body, b"application/json")


class Waiter:
    """A request waiting for the same key's backend request (coalescing)."""

    __slots__ = ("client", "gone", "handler", "key", "req", "timer")

    def __init__(self, handler: CachingHandler, client: Any, req: Request, key: str) -> None:
        self.handler = handler
        self.client = client
        self.req = req
        self.key = key
        self.gone = False
        client.producer = self  # told when the client leaves while waiting
        self.timer = client.ctx.loop.call_later(handler.lock_timeout, self.timed_out)

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
            client.producer = None
        # runs inside another request's exchange or a timer: a failure here is this
        # request's alone
        try:
            self.handler.handle(client, self.req, may_wait=False)
        except Exception:
            log.exception("request %s failed in the cache", self.req.request_id)
            if not client.resp_started:
                client.problem(self.req, 500)


class Recorder:
    """Fed by the proxy exchange with the backend's response; stores it when the rules
    allow and it fits. The leader of a coalesced miss releases its waiters at the end."""

    __slots__ = (
        "chunks",
        "decision",
        "fields",
        "handler",
        "headers",
        "key",
        "now",
        "over",
        "primary",
        "req",
        "size",
        "status",
        "status_line",
        "stored",
        "url",
    )

    def __init__(
        self,
        handler: CachingHandler,
        key: str | None,
        primary: str,
        url: str,
        req: Request,
        now: float,
    ) -> None:
        self.handler = handler
        self.key = key  # set for the leader of waiters
        self.primary = primary
        self.url = url
        self.req = req
        self.now = now
        self.decision: Any = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.status = 0
        self.status_line = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.fields: dict[str, str] = {}
        self.stored: Entry | None = None
        self.over = False

    def on_head(self, status: int, status_line: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        handler = self.handler
        fields = field_map(headers)
        authorized = any(n == _AUTHORIZATION for n, _, _ in self.req.headers)
        decision = decide(self.req.method, status, fields, handler.rules, authorized, time.time())
        if decision.store:
            self.decision = decision
            self.status = status
            self.status_line = status_line
            self.headers = list(headers)
            self.fields = fields

    def on_body(self, data: bytes) -> None:
        if self.decision is None:
            return
        self.size += len(data)
        if self.size > self.handler.store.max_object_size:
            self.decision = None  # too large: streamed through, not kept
            self.chunks = []
            return
        self.chunks.append(data)

    def on_end(self) -> None:
        if self.over:
            return
        self.over = True
        decision = self.decision
        handler = self.handler
        if decision is not None:
            now = time.time()
            fields = self.fields
            vary = parse_vary(fields.get("vary", ""))
            key = variant_key(self.primary, vary, self.req.headers)
            entry = build_entry(
                key,
                self.url,
                self.status_line,
                self.status,
                self.headers,
                fields,
                b"".join(self.chunks),
                decision,
                now,
            )
            self.chunks = []
            handler.stored(self.primary, entry)
            self.stored = entry
        if self.key is not None:
            handler.release(self.key)

    def on_abort(self) -> None:
        if self.over:
            return
        self.over = True
        self.chunks = []
        if self.key is not None:
            self.handler.release(self.key)


def serve(client: Any, req: Request, entry: Entry, label: bytes, now: float) -> None:
    """Answer from a stored entry: the prebuilt head plus Date, Age, X-Cache and the
    length, then the body, in one write."""
    age = b"Age: %d\r\n" % int(entry.age(now))
    date = client.ctx.date_header
    if entry.status == 200 and not_modified(req, entry):
        req.status = 304
        head = b"".join((_NOT_MODIFIED, entry.meta, date, age, label))
        framing = BODY_NONE
        body = b""
    else:
        req.status = entry.status
        body = entry.body
        if entry.status == 204 or entry.status == 304:
            head = b"".join((entry.head, date, age, label))
            framing = BODY_NONE
            body = b""
        else:
            length = b"Content-Length: %d\r\n" % len(body)
            head = b"".join((entry.head, date, age, label, length))
            framing = BODY_LENGTH
            if req.method == "HEAD":
                framing = BODY_NONE
                body = b""
    client.cork()
    client.write_head(req, head, framing)
    if body:
        client.write_body(body)
    client.end_response()
    client.uncork()


def relay(client: Any, req: Request, cap: CaptureClient) -> None:
    """Pass on a response collected by a capture client (not stored)."""
    req.status = cap.status
    framing = cap.framing
    body = cap.body
    if req.method == "HEAD":
        framing = BODY_NONE
        body = b""
    client.cork()
    client.write_head(req, cap.head, framing)
    if body:
        client.write_body(body)
    client.end_response()
    client.uncork()
