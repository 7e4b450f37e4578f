"""Connection attempts of an exchange: an endpoint's connection slot, a pooled or new
connection, and the rules for trying again.

A request holds one connection slot of the endpoint it is sent to (`max_connections`
counts them, waiters queue for them) from `_begin` until `_release`: those two are the
only places a slot is taken or given back. A connection that fails before anything
reached the backend is retried elsewhere for any request; once the request may have
reached it, only an idempotent request without a body is tried again, within the pool's
attempts and retry budget.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

from bastion.proxy.tunnel import TunnelEnd

if TYPE_CHECKING:
    from bastion.balance.balancer import Member
    from bastion.proxy.pool import Pool

log = logging.getLogger("bastion.proxy")

IDEMPOTENT: Final = frozenset(("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"))

_AT_LIMIT: Final = "The upstream server is at its connection limit."


class Attempts(TunnelEnd):  # one chain of parts: see proxy/base.py
    def _begin(self, member: Member) -> None:
        """Send the request to `member` (a pooled connection, else a new one)."""
        handler = self.handler
        ep = member.ep
        limit = handler.max_connections
        if limit and ep.inflight >= limit:
            if len(ep.waiters) < handler.max_pending:
                self.task = self.loop.create_task(self._wait_for_slot(member))
                return
            log.warning("upstream %s: at max_connections, request refused", ep.label)
            self._fail(503, _AT_LIMIT, b"Retry-After: 1\r\n")
            return
        # the slot is taken, and the endpoint's pool becomes the exchange's
        self.member = member
        ep.inflight += 1
        ep.requests += 1
        pool = self.pool = ep.pool
        conn = pool.acquire()
        if conn is not None:
            self._send(conn)
        else:
            self.task = self.loop.create_task(self._connect(pool))

    def _release(self) -> None:
        """Give back the connection slot the request holds, if any (a request waiting
        for one may then go)."""
        member = self.member
        if member is not None:
            self.member = None
            member.ep.release_slot()

    def _cancel_timer(self) -> None:
        """The total timeout no longer applies: the exchange is over."""
        timer = self.timer
        if timer is not None:
            self.timer = None
            timer.cancel()

    async def _wait_for_slot(self, member: Member) -> None:
        waiter: asyncio.Future[None] = self.loop.create_future()
        member.ep.waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, self.handler.connect_timeout)
        except TimeoutError:
            self.task = None
            self._fail(503, _AT_LIMIT, b"Retry-After: 1\r\n")
            return
        self.task = None
        if not self.done:
            self._begin(member)

    def _next_member(self) -> Member | None:
        """Another endpoint for a new try (the current one is set aside)."""
        member = self.member
        tried = self.tried
        if tried is None:
            tried = self.tried = []
        if member is not None:
            tried.append(member)
            self._release()
        return self.handler.balancer.pick(self.req, self.loop.time(), tried)

    def _failed_here(self) -> None:
        member = self.member
        if member is not None:
            self.handler.balancer.failed(member, self.loop.time())

    async def _connect(self, pool: Pool) -> None:
        """A new connection to `pool`; if it fails, the request goes to another endpoint
        (a pooled connection of it, or a new one in a task of its own)."""
        handler = self.handler
        self.attempts += 1
        try:
            conn = await asyncio.wait_for(pool.connect(), handler.connect_timeout)
        except (TimeoutError, OSError) as exc:
            if isinstance(exc, TimeoutError):
                log.warning("upstream %s: connect timed out", pool.label)
            else:
                log.warning("upstream %s: connect failed: %s", pool.label, exc.strerror or exc)
            self._count_error("connect", pool)
            if self.done:
                return
            self.task = None
            self._failed_here()
            # Nothing reached the backend: any request may go elsewhere, but not to wait
            # for a connection slot there.
            member = self._next_member()
            if member is None or (
                handler.max_connections and member.ep.inflight >= handler.max_connections
            ):
                if isinstance(exc, TimeoutError):
                    self._fail(504, "The upstream server did not accept the connection in time.")
                else:
                    self._fail(502, "The upstream server refused the connection.")
                return
            if handler.sticky_cookie is not None:
                self.set_cookie = member.cookie
            self._begin(member)
            return
        self.task = None
        if self.done:
            pool.release(conn)
            return
        self._send(conn)

    def _retry(self, now: float) -> bool:
        """Try again elsewhere an idempotent request without a body, within the
        pool's attempts and retry budget. The current connection is dropped."""
        handler = self.handler
        req = self.req
        if (
            handler.budget is None
            or self.resp_started
            or req.method not in IDEMPOTENT
            or req.has_body
            or self.retries + 1 >= handler.attempts
        ):
            return False
        avoid = list(self.tried or ())
        if self.member is not None:
            avoid.append(self.member)
        member = handler.balancer.pick(req, now, avoid)
        if member is None or not handler.budget.try_retry(now):
            return False
        self.retries += 1
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            conn.exchange = None
            conn.abort()
        tried = self.tried
        if tried is None:
            tried = self.tried = []
        if self.member is not None:
            tried.append(self.member)
        self._release()
        self.request_sent = False
        self.attempts = 1  # a retried request never counts as "on a reused connection"
        if handler.sticky_cookie is not None:
            self.set_cookie = member.cookie
        self._begin(member)
        return True

    def _count_error(self, kind: str, pool: Pool | None = None) -> None:
        """An upstream failure of `kind` (`observe/events.py`), for the metrics: called on
        failure paths only. Without a pool yet (waiting for a slot) nothing is counted."""
        pool = pool or self.pool
        if pool is not None and pool.events is not None:
            pool.events.upstream_error(self.handler.balancer.name, pool.label, kind)

    def _unavailable(self) -> None:
        balancer = self.handler.balancer
        after = balancer.retry_after(self.loop.time())
        log.warning("upstream pool %s: no healthy endpoint", balancer.name)
        self._fail(
            503,
            "No healthy upstream server is available.",
            b"Retry-After: %d\r\n" % after,
        )

    def _total_expired(self) -> None:
        self.timer = None
        if self.done:
            return
        log.warning("upstream %s: total timeout", self.pool.label if self.pool else "?")
        self._count_error("timeout")
        self._fail(504, "The upstream server did not answer in time.")
