"""One proxied request: client → upstream and back, streamed, with backpressure.

An `Exchange` is three things at once, so that no extra object or task sits on
the hot path: the sink of the client's request body, the producer of the client's
response (paused when the client reads slowly), and the receiver of the upstream
connection's parser events. Only a new upstream connection costs a task.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING, Any

from bastion.balance.policies import read_cookie
from bastion.http.request import BODY_CHUNKED, BODY_CLOSE, BODY_LENGTH, BODY_NONE, Request
from bastion.http.status import status_line
from bastion.http1.server import PAUSE_UPSTREAM
from bastion.proxy.headers import RESPONSE_DROPPED
from bastion.proxy.pool import Pool, UpstreamConnection
from bastion.tls.client import describe_tls_error

if TYPE_CHECKING:
    from bastion.balance.balancer import Member
    from bastion.http1.server import HTTP1Connection
    from bastion.policies.fields import FieldEdit
    from bastion.proxy.handler import ProxyHandler

log = logging.getLogger("bastion.proxy")

IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"))

# What to do with a response header, by name: a dict probe on the name as sent
# (most backends use one spelling) before falling back to its lowercase form.
_KEEP, _LENGTH, _DATE, _CHUNKED, _CONNECTION, _UPGRADE, _DROP = range(7)
# Connection values that name no other header: nothing to strip besides Connection
_PLAIN_CONNECTION = frozenset((b"keep-alive", b"Keep-Alive", b"close", b"Close"))
_RESPONSE_KINDS: dict[bytes, int] = {}
for _name in RESPONSE_DROPPED:
    _RESPONSE_KINDS[_name] = _DROP
_RESPONSE_KINDS[b"transfer-encoding"] = _CHUNKED
_RESPONSE_KINDS[b"connection"] = _CONNECTION
_RESPONSE_KINDS[b"upgrade"] = _UPGRADE
_RESPONSE_KINDS[b"content-length"] = _LENGTH
_RESPONSE_KINDS[b"date"] = _DATE
for _name, _kind in list(_RESPONSE_KINDS.items()):
    _RESPONSE_KINDS[_name.title()] = _kind  # "Content-Length", "Transfer-Encoding", …
for _name in (
    b"Server",
    b"Content-Type",
    b"Cache-Control",
    b"ETag",
    b"Last-Modified",
    b"Vary",
    b"Set-Cookie",
    b"Location",
    b"Expires",
    b"Accept-Ranges",
):
    _RESPONSE_KINDS[_name] = _KEEP


def _edit_kinds(edit: FieldEdit) -> dict[bytes, int]:
    """The field table of a route whose header rules remove fields: removed names are
    dropped (framing fields cannot be named in the rules)."""
    kinds = {
        name: kind
        for name, kind in _RESPONSE_KINDS.items()
        if kind != _KEEP or not edit.removes(name.lower())  # left to the lowercase probe
    }
    for lname in edit.drop:
        if _RESPONSE_KINDS.get(lname, _KEEP) in (_KEEP, _DATE):
            kinds[lname] = kinds[lname.title()] = _DROP
    edit.kinds = kinds
    return kinds


class Exchange:
    # No __slots__: with class-level defaults, creating an exchange sets only the
    # four attributes below, which is measurably cheaper once per request.
    head = b""
    pool: Pool | None = None
    upstream: UpstreamConnection | None = None
    task: asyncio.Task[None] | None = None
    resp_started = False
    request_sent = False
    interim = False
    tunnelling = False
    done = False
    framing = BODY_NONE
    attempts = 0
    sent_at = 0.0
    member: Member | None = None
    tried: list[Member] | None = None  # members tried before the current one
    set_cookie = b""
    retries = 0
    timer: asyncio.TimerHandle | None = None
    # paused by the client's backpressure, and how many bytes it had not taken then
    client_stalled = False
    unsent = 0
    # a cache's copy of the response: told of the head, body chunks and the end
    recorder: Any = None
    # Whether a connection that answered a HEAD may serve another request. A backend
    # that sends a body with its HEAD answer (a handler shared with GET) may send it
    # after the head, when the connection already carries the next request: that body
    # would be read as the next answer. Only origins known never to do so keep it.
    reuse_after_head = False

    def __init__(self, handler: ProxyHandler, client: HTTP1Connection, req: Request) -> None:
        self.handler = handler
        self.client = client
        self.req = req
        self.loop = client.ctx.loop

    # ------------------------------------------------------------------- start
    def start(self, head: bytes) -> None:
        self.head = head
        client = self.client
        client.producer = self
        req = self.req
        if req.has_body and req.body_buffer is None and not req.body_done:
            # Keep what arrives while the upstream connection opens: the client
            # protocol drops body bytes of a dispatched request that has no buffer.
            req.body_buffer = []
        client.send_continue(req)
        handler = self.handler
        balancer = handler.balancer
        member = balancer.only
        if member is None:
            now = self.loop.time()
            member = balancer.pick(req, now)
            if handler.budget is not None:
                handler.budget.request(now)
            if member is None:
                self._unavailable()
                return
        if handler.total_timeout:
            self.timer = self.loop.call_later(handler.total_timeout, self._total_expired)
        if handler.sticky_cookie is not None and read_cookie(req, handler.sticky_cookie) != (
            member.key
        ):
            self.set_cookie = member.cookie
        self._begin(member)

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
            self._fail(
                503, "The upstream server is at its connection limit.", b"Retry-After: 1\r\n"
            )
            return
        self.member = member
        ep.inflight += 1
        ep.requests += 1
        pool = self.pool = ep.pool
        conn = pool.acquire()
        if conn is not None:
            self._send(conn)
        else:
            self.task = self.loop.create_task(self._connect(pool))

    async def _wait_for_slot(self, member: Member) -> None:
        waiter: asyncio.Future[None] = self.loop.create_future()
        member.ep.waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, self.handler.connect_timeout)
        except TimeoutError:
            self.task = None
            self._fail(
                503, "The upstream server is at its connection limit.", b"Retry-After: 1\r\n"
            )
            return
        self.task = None
        if not self.done:
            self._begin(member)

    def _release(self) -> None:
        """The request no longer occupies its endpoint."""
        member = self.member
        if member is not None:
            self.member = None
            member.ep.release_slot()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _next_member(self) -> Member | None:
        """Another endpoint for a new try (the current one is set aside)."""
        member = self.member
        tried = self.tried
        if tried is None:
            tried = self.tried = []
        if member is not None:
            tried.append(member)
            self._release_slot_only()
        return self.handler.balancer.pick(self.req, self.loop.time(), tried)

    def _release_slot_only(self) -> None:
        member = self.member
        if member is not None:
            self.member = None
            member.ep.release_slot()

    def _failed_here(self) -> None:
        member = self.member
        if member is not None:
            self.handler.balancer.failed(member, self.loop.time())

    async def _connect(self, pool: Pool) -> None:
        handler = self.handler
        while True:
            self.attempts += 1
            try:
                conn = await asyncio.wait_for(pool.connect(), handler.connect_timeout)
            except (TimeoutError, OSError) as exc:
                if isinstance(exc, TimeoutError):
                    log.warning("upstream %s: connect timed out", pool.label)
                else:
                    log.warning("upstream %s: connect failed: %s", pool.label, exc.strerror or exc)
                if self.done:
                    return
                self._failed_here()
                # Nothing reached the backend: any request may go elsewhere.
                member = self._next_member()
                if member is None or (
                    handler.max_connections and member.ep.inflight >= handler.max_connections
                ):
                    self.task = None
                    if isinstance(exc, TimeoutError):
                        self._fail(
                            504, "The upstream server did not accept the connection in time."
                        )
                    else:
                        self._fail(502, "The upstream server refused the connection.")
                    return
                self.member = member
                member.ep.inflight += 1
                member.ep.requests += 1
                pool = self.pool = member.ep.pool
                if handler.sticky_cookie is not None:
                    self.set_cookie = member.cookie
                idle = pool.acquire()
                if idle is not None:
                    self.task = None
                    self._send(idle)
                    return
                continue
            break
        self.task = None
        if self.done:
            pool.release(conn)
            return
        self._send(conn)

    def _send(self, conn: UpstreamConnection) -> None:
        self.upstream = conn
        conn.exchange = self
        req = self.req
        transport = conn.transport
        assert transport is not None
        self.sent_at = self.loop.time()
        if req.has_body:
            buffered = self.client.take_body(req, self)
            if req.chunked:
                chunks = [self.head]
                for data in buffered:
                    chunks += (b"%x\r\n" % len(data), data, b"\r\n")
                transport.writelines(chunks)
            elif buffered:
                transport.writelines([self.head, *buffered])
            else:
                transport.write(self.head)
            if req.body_done:
                self.on_body_end()
            else:
                conn.arm(self.sent_at + self.handler.send_timeout)
        else:
            transport.write(self.head)
            self.request_sent = True
            conn.arm(self.sent_at + self.handler.read_timeout)

    # ------------------------------------------------- request body (the sink)
    def on_body(self, data: bytes) -> None:
        conn = self.upstream
        if conn is None or conn.transport is None:
            return
        if self.req.chunked:
            conn.transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            conn.transport.write(data)
        conn.deadline = self.loop.time() + self.handler.send_timeout

    def on_body_end(self) -> None:
        self.request_sent = True
        conn = self.upstream
        if conn is None or conn.transport is None:
            return
        if self.req.chunked:
            conn.transport.write(b"0\r\n\r\n")
        conn.arm(self.loop.time() + self.handler.read_timeout)

    # -------------------------------------------------------------- backpressure
    # While the client is too slow to take the response, the upstream is not read:
    # its silence is ours, not its own. The connection's timer then watches the
    # client instead (the client send timeout, nginx's send_timeout): each time it
    # fires, the client must have taken some of what waits for it since the last.
    def pause_producing(self) -> None:
        conn = self.upstream
        if conn is not None and conn.transport is not None:
            conn.transport.pause_reading()
            if self.tunnelling:
                return  # a tunnel's only timer is its idle timeout
            client = self.client
            self.client_stalled = True
            self.unsent = client.unsent_bytes()
            conn.arm(self.loop.time() + client.send_timeout)

    def resume_producing(self) -> None:
        conn = self.upstream
        if conn is not None and conn.transport is not None:
            conn.transport.resume_reading()
            if self.client_stalled:
                self.client_stalled = False
                conn.arm(self.loop.time() + self.handler.read_timeout)

    def _client_progressed(self, conn: UpstreamConnection) -> bool:
        """The send timeout expired: True (and the timer re-armed) if the client has
        taken some of the waiting bytes meanwhile, so it is slow but not stuck."""
        client = self.client
        unsent = client.unsent_bytes()
        if unsent < self.unsent:
            self.unsent = unsent
            conn.arm(self.loop.time() + client.send_timeout)
            return True
        return False

    def upstream_pause_writing(self) -> None:
        self.client.pause_reading(PAUSE_UPSTREAM)

    def upstream_resume_writing(self) -> None:
        self.client.resume_reading(PAUSE_UPSTREAM)

    # ------------------------------------------------------- upstream response
    def on_response_head(self, status: int) -> None:
        req = self.req
        member = self.member
        if member is not None and member.track and status >= 200:
            now = self.loop.time()
            member.ep.observe(now - self.sent_at, now)
            if status >= 500:
                self.handler.balancer.failed(member, now)
                statuses = self.handler.retry_statuses
                if statuses is not None and status in statuses and self._retry(now):
                    return
            else:
                member.ep.failures = 0
        if status < 200 and not (status == 101 and req.upgrade is not None):
            if status == 101:  # a switch the client never asked for: no tunnel
                self.upstream_failed(ValueError("101 to a request without Upgrade"))
                return
            self.interim = True  # 100/102/103: not relayed, the final answer follows
            if self.upstream is not None:
                self.upstream.resp_headers = []
            return
        parts = [status_line(status)]
        append = parts.append
        chunked = False
        length = b""  # the Content-Length value, if any
        has_date = False
        tokens: list[bytes] = []
        conn = self.upstream
        headers: list[tuple[bytes, bytes]] = []
        if conn is not None:
            headers = conn.resp_headers
            conn.resp_headers = []
        kinds = _RESPONSE_KINDS
        prefixes: tuple[bytes, ...] = ()
        edit = req.head_edit if status != 101 else None  # a switch is relayed as sent
        if edit is not None:
            # the route's header rules, applied in this same pass (policies/fields.py)
            kinds = edit.kinds or _edit_kinds(edit)
            prefixes = edit.prefixes
        for name, value in headers:
            kind = kinds.get(name)
            if kind is None:
                lname = name.lower()
                kind = kinds.get(lname, _KEEP)
                if prefixes and kind == _KEEP and lname.startswith(prefixes):
                    continue
            if kind == _KEEP:
                append(name + b": " + value + b"\r\n")
                continue
            if kind == _LENGTH:
                length = value
            elif kind == _DATE:
                has_date = True
            else:
                if kind == _CHUNKED:
                    chunked = True
                elif kind == _CONNECTION and value not in _PLAIN_CONNECTION:
                    tokens += [t.strip().lower() for t in value.split(b",")]
                if status != 101 or kind in (_CHUNKED, _DROP):
                    continue
            append(name + b": " + value + b"\r\n")
        if tokens and status != 101:
            named = set(tokens) - {b"close", b"keep-alive", b""}
            if named:
                parts = [parts[0]] + [
                    p for p in parts[1:] if p.split(b":", 1)[0].lower() not in named
                ]
        if not has_date and (edit is None or b"date" not in edit.drop):
            parts.append(self.client.ctx.date_header)
        if self.set_cookie:
            parts.append(self.set_cookie)
        if edit is not None:
            parts.append(edit.render(req))
            req.on_head = None  # applied: the answer must not go through the route's hook
        req.status = status
        req.upstream = self.pool.label if self.pool is not None else ""
        if status == 101:
            self.head = b"".join(parts)
            # llhttp reports the 101's message end before raising HttpParserUpgrade
            # (then on_upgraded): that end must not finish the exchange.
            self.interim = True
            return
        if req.method == "HEAD" or status == 204 or status == 304:
            framing = BODY_NONE
        elif chunked:
            framing = BODY_CHUNKED
        elif length:
            framing = BODY_LENGTH
        else:
            framing = BODY_CLOSE
        self.framing = framing
        self.resp_started = True
        if self.recorder is not None:
            self.recorder.on_head(status, parts[0], headers)
        self.client.write_head(req, b"".join(parts), framing)
        if req.method == "HEAD":
            # The head is the whole answer (llhttp cannot be told it answers a HEAD).
            conn = self.upstream
            keep_alive = False
            if self.reuse_after_head and conn is not None:
                keep_alive = conn.parser.should_keep_alive()
                conn.reset_parser()
            self._finish(keep_alive)
        elif status == 204 and (chunked or (length and length != b"0")):
            # A 204 announcing a body: the backend may send it, late, where the next
            # answer belongs; its connection is not reused (this framing is not pooled).
            self.framing = BODY_CLOSE

    def on_response_body(self, data: bytes) -> None:
        if self.recorder is not None:
            self.recorder.on_body(data)
        conn = self.upstream
        if conn is not None and not self.client_stalled:
            conn.deadline = self.loop.time() + self.handler.read_timeout
        # last: a client that cannot take this pauses us (and its deadline replaces ours)
        self.client.write_body(data)

    def on_response_end(self) -> None:
        if self.interim:
            self.interim = False
            return
        conn = self.upstream
        self._finish(conn is not None and conn.parser.should_keep_alive())

    def _finish(self, keep_alive: bool) -> None:
        if self.done:
            return
        self.done = True
        member = self.member
        if member is not None:  # inlined _release(): this runs for every response
            self.member = None
            member.ep.release_slot()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.recorder is not None:
            self.recorder.on_end()
        req = self.req
        conn = self.upstream
        self.upstream = None
        req.upstream_time = self.loop.time() - self.sent_at
        if conn is not None:
            if self.request_sent and keep_alive and self.framing != BODY_CLOSE:
                conn.exchange = None
                conn.pool.release(conn)
            else:
                conn.close()
        if not req.body_done:
            req.sink = None  # answered early: the rest of the body is not forwarded
        if conn is not None and conn.in_feed:
            # Ending the response may dispatch the client's next (pipelined)
            # request at once: let the pool take the connection back first, so
            # that request reuses it instead of opening another one.
            conn.after_feed = self.end_client
        else:
            self.end_client()

    def end_client(self) -> None:
        """The upstream's answer is complete; origins that rewrite answers hook in here."""
        self.client.end_response()

    def upstream_eof(self) -> None:
        if self.resp_started and self.framing == BODY_CLOSE and not self.done:
            self.on_response_end()

    # --------------------------------------------------------------- failures
    def upstream_lost(self, exc: Exception | None) -> None:
        if self.done:
            return
        if self.tunnelling:
            self.done = True
            self._release()
            self._close_client()
            return
        conn_reused = self.attempts == 0
        req = self.req
        self.upstream = None
        if isinstance(exc, ssl.SSLError):
            # TLS 1.3 servers reject a missing client certificate after the handshake
            label = self.pool.label if self.pool is not None else "?"
            log.warning("upstream %s: %s", label, describe_tls_error(exc))
        if not self.resp_started and req.method in IDEMPOTENT and not req.has_body:
            if conn_reused and self.pool is not None and self.tried is None:
                # A pooled connection the backend had closed: retrying is safe, the
                # request has no body and its method is idempotent.
                self.task = self.loop.create_task(self._connect(self.pool))
                return
            # A fresh connection lost: the backend itself went away mid-request.
            self._failed_here()
            if self._retry(self.loop.time()):
                return
        elif not self.resp_started:
            self._failed_here()
        self._fail(502, None)

    def upstream_failed(self, exc: Exception) -> None:
        log.warning(
            "upstream %s sent an invalid response: %s",
            self.pool.label if self.pool else "?",
            exc,
        )
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            conn.abort()
        self._fail(502, None)

    def timed_out(self) -> None:
        if self.tunnelling:
            self.peer_closed()  # an idle tunnel past websocket_idle_timeout
            self._close_client()
            return
        if self.client_stalled:
            conn = self.upstream
            if conn is not None and self._client_progressed(conn):
                return
            log.info("client %s: send timed out, the response is cut", self.req.client_ip)
            self._fail(504, None)  # the head is out: the client connection is cut
            return
        log.warning("upstream %s: timed out", self.pool.label if self.pool else "?")
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            conn.abort()
        self._fail(504, None)

    def client_gone(self) -> None:
        self.done = True
        if self.recorder is not None:
            self.recorder.on_abort()
        self._release()
        if self.task is not None:
            self.task.cancel()
            self.task = None
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            conn.abort()

    def _unavailable(self) -> None:
        balancer = self.handler.balancer
        after = balancer.retry_after(self.loop.time())
        log.warning("upstream pool %s: no healthy endpoint", balancer.name)
        self._fail(
            503,
            "No healthy upstream server is available.",
            b"Retry-After: %d\r\n" % after,
        )

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
        self._release_slot_only()
        self.request_sent = False
        self.attempts = 1  # a retried request never counts as "on a reused connection"
        if handler.sticky_cookie is not None:
            self.set_cookie = member.cookie
        self._begin(member)
        return True

    def _total_expired(self) -> None:
        self.timer = None
        if self.done:
            return
        log.warning("upstream %s: total timeout", self.pool.label if self.pool else "?")
        self._fail(504, "The upstream server did not answer in time.")

    def _fail(self, status: int, detail: str | None, headers: bytes = b"") -> None:
        if self.done:
            return
        self.done = True
        if self.recorder is not None:
            self.recorder.on_abort()
        if self.member is not None or self.timer is not None:
            self._release()
        self.task = None
        req = self.req
        req.sink = None
        if self.upstream is not None:
            self.upstream.abort()
            self.upstream = None
        if self.resp_started:
            # The head is out: the only honest signal left is cutting the connection.
            req.status = req.status or status
            self.client.abort()
            return
        req.upstream = self.pool.label if self.pool is not None else ""
        self.client.resp_keep_alive = self.client.resp_keep_alive and req.body_done
        self.client.problem(req, status, detail, headers)

    def _close_client(self) -> None:
        transport = self.client.transport
        if transport is not None:
            transport.close()

    # ------------------------------------------------------------------ tunnel
    def on_upgraded(self, rest: bytes) -> None:
        client = self.client
        self.tunnelling = True
        self.resp_started = True
        conn = self.upstream
        if client.transport is None or conn is None:
            return
        conn.deadline = 0.0  # tunnels have their own idle rule, below
        conn.tunnel_idle = self.handler.websocket_idle_timeout
        client.start_tunnel(self, self.head + b"\r\n", rest)
        if conn.tunnel_idle:
            conn.arm(self.loop.time() + conn.tunnel_idle)

    def from_client(self, data: bytes) -> None:
        conn = self.upstream
        if conn is not None and conn.transport is not None:
            conn.transport.write(data)
            if conn.tunnel_idle:
                conn.deadline = self.loop.time() + conn.tunnel_idle

    def from_upstream(self, data: bytes) -> None:
        transport = self.client.transport
        if transport is not None:
            transport.write(data)
            self.req.bytes_out += len(data)
            conn = self.upstream
            if conn is not None and conn.tunnel_idle:
                conn.deadline = self.loop.time() + conn.tunnel_idle

    def peer_closed(self) -> None:
        """The client side of a tunnel closed."""
        self.done = True
        self._release()
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            conn.close()
