"""One proxied request: client → upstream and back, streamed, with backpressure.

An `Exchange` is three things at once, so that no extra object or task sits on
the hot path: the sink of the client's request body, the producer of the client's
response (paused when the client reads slowly), and the receiver of the upstream
connection's parser events. Only a new upstream connection costs a task.

Its parts: this module (start, request body, backpressure, response, failures),
`attempts.py` (connection slots, connecting, retries), `tunnel.py` (Upgrade tunnels),
`response_head.py` (the head relayed to the client, as pure functions) and `base.py`
(the state they share).
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING, Final

from bastion.balance.policies import read_cookie
from bastion.http.context import request_clock
from bastion.http.downstream import Pause
from bastion.http.joining import join_bytes
from bastion.http.request import BODY_CLOSE
from bastion.proxy.attempts import IDEMPOTENT, Attempts
from bastion.proxy.raw_head import rewrite_raw
from bastion.proxy.response_head import RESPONSE_KINDS, edit_kinds, rewrite_head
from bastion.tls.client import describe_tls_error

if TYPE_CHECKING:
    from bastion.proxy.pool import UpstreamConnection

__all__ = ["Exchange"]

log = logging.getLogger("bastion.proxy")

_PAUSE_UPSTREAM: Final = Pause.UPSTREAM  # (an enum member looked up once, not per call)
# a C static, not a lookup in the module's dict at each use (http1/head.py says why)
_request_clock: Final = request_clock
_join_bytes: Final = join_bytes


def read_time(conn: UpstreamConnection) -> float:
    """The loop's time, read once per read of the upstream socket: the answer's head, its
    body and the pool's idle timer, which one read usually brings together, share the
    reading (some 300 instructions each, compiled; the loop's clock is in whole
    milliseconds anyway). Outside a read, the loop's time now."""
    if not conn.in_feed:
        return conn.pool.loop.time()
    now = conn.read_at
    if now < 0.0:
        now = conn.read_at = conn.pool.loop.time()
    return now


class Exchange(Attempts):  # with TunnelEnd, through Attempts: see proxy/base.py
    """One request forwarded to the route's upstream pool and its answer relayed to
    `client`; `ProxyHandler.handle` makes one and calls `start`."""

    # ------------------------------------------------------------------- start
    def start(self, head: bytes) -> None:
        """Pick an endpoint and send it `head` (the request head for the upstream),
        then the body as it comes."""
        self.head = head
        client = self.client
        client.set_producer(self)
        req = self.req
        if req.has_body and req.body_buffer is None and not req.body_done:
            # Keep what arrives while the upstream connection opens: the client
            # protocol drops body bytes of a dispatched request that has no buffer.
            req.body_buffer = []
        if req.expect_continue:  # (the contract's method checks it too: no call per request)
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

    def _send(self, conn: UpstreamConnection) -> None:
        self.upstream = conn
        conn.exchange = self
        req = self.req
        transport = conn.transport
        assert transport is not None
        self.sent_at = self.loop.time()  # deadlines
        self.sent_clock = _request_clock()  # the upstream's time (sub-millisecond)
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
        self.client.pause_reading(_PAUSE_UPSTREAM)

    def upstream_resume_writing(self) -> None:
        self.client.resume_reading(_PAUSE_UPSTREAM)

    # ------------------------------------------------------- upstream response
    def on_response_head(self, status: int) -> None:
        req = self.req
        member = self.member
        if status >= 500:
            self._count_error("5xx")
        conn = self.upstream
        if member is not None and member.track and status >= 200:
            now = self.loop.time() if conn is None else read_time(conn)
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
            return
        conn = self.upstream
        edit = req.head_edit if status != 101 else None  # a switch is relayed as sent
        head_request = req.method == "HEAD"
        # the compiled build's common case, the head relayed from its bytes (raw_head.py),
        # the route's header rules applied in the same scan: no cache, no handler that
        # filtered the fields already (S3); a pure build's connection was handed the
        # fields (pool.FieldsUpstreamConnection)
        rewritten = None
        if conn is not None and conn.resp_headers is None and self.recorder is None:
            rewritten = rewrite_raw(
                status, conn.head_buf, conn.head_start, conn.head_end, head_request, edit
            )
        headers: list[tuple[bytes, bytes]] = []  # (for a recorder: then not rewritten yet)
        if rewritten is None:
            if conn is not None:  # (the pure build's connection has them as a list)
                headers = conn.resp_headers or conn.fields()
            if edit is None:
                kinds = RESPONSE_KINDS
                prefixes: tuple[bytes, ...] = ()
            else:
                # the route's header rules, applied in this same pass (policies/fields.py)
                kinds = edit.kinds or edit_kinds(edit)
                prefixes = edit.prefixes
            rewritten = rewrite_head(status, headers, kinds, prefixes, head_request)
        parts, add_date, framing, self.framing = rewritten
        if add_date:
            parts.append(self.client.date_header)
        if self.set_cookie:
            parts.append(self.set_cookie)
        if edit is not None:
            parts.append(edit.render(req))
            req.on_head = None  # applied: the answer must not go through the route's hook
        req.status = status
        req.upstream = self.pool.label if self.pool is not None else ""
        if status == 101:
            self.head = _join_bytes(parts)
            # llhttp reports the 101's message end before raising HttpParserUpgrade
            # (then on_upgraded): that end must not finish the exchange.
            self.interim = True
            return
        self.resp_started = True
        if self.recorder is not None:
            self.recorder.on_head(status, parts[0], headers)
        self.client.write_head(req, _join_bytes(parts), framing)
        if head_request:
            # The head is the whole answer (llhttp cannot be told it answers a HEAD).
            conn = self.upstream
            keep_alive = False
            if self.reuse_after_head and conn is not None:
                keep_alive = conn.parser.should_keep_alive()
                conn.reset_parser()
            self._finish(keep_alive)

    def on_response_body(self, data: bytes) -> None:
        if self.recorder is not None:
            self.recorder.on_body(data)
        conn = self.upstream
        if conn is not None and not self.client_stalled:
            conn.deadline = read_time(conn) + self.handler.read_timeout
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
        self._release()
        if self.timer is not None:
            self._cancel_timer()
        if self.recorder is not None:
            self.recorder.on_end()
        req = self.req
        conn = self.upstream
        self.upstream = None
        req.ended = ended = _request_clock()  # (the observers' time too: read once)
        req.upstream_time = ended - self.sent_clock
        if conn is not None:
            if self.request_sent and keep_alive and self.framing != BODY_CLOSE:
                conn.exchange = None
                if conn.in_feed:  # (what `Pool.release` does then, without the call)
                    conn.release_after_feed = True
                else:
                    conn.pool.release(conn)
            else:
                conn.close()
        if not req.body_done:
            req.sink = None  # answered early: the rest of the body is not forwarded
        if conn is not None and conn.in_feed:
            # Ending the response may dispatch the client's next (pipelined)
            # request at once: let the pool take the connection back first, so
            # that request reuses it instead of opening another one.
            conn.after_feed = self
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
            self._tunnel_lost()
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
            self._count_error("reset")
            self._failed_here()
            if self._retry(self.loop.time()):
                return
        else:
            self._count_error("reset")
            if not self.resp_started:
                self._failed_here()
        self._fail(502, None)

    def upstream_failed(self, exc: Exception) -> None:
        log.warning(
            "upstream %s sent an invalid response: %s",
            self.pool.label if self.pool else "?",
            exc,
        )
        self._count_error("invalid")
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            conn.abort()
        self._fail(502, None)

    def timed_out(self) -> None:
        if self.tunnelling:
            self._tunnel_idle()  # past websocket_idle_timeout
            return
        if self.client_stalled:
            conn = self.upstream
            if conn is not None and self._client_progressed(conn):
                return
            log.info("client %s: send timed out, the response is cut", self.req.client_ip)
            self._fail(504, None)  # the head is out: the client connection is cut
            return
        log.warning("upstream %s: timed out", self.pool.label if self.pool else "?")
        self._count_error("timeout")
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
        self._cancel_timer()
        if self.task is not None:
            self.task.cancel()
            self.task = None
        conn = self.upstream
        self.upstream = None
        if conn is not None:
            conn.abort()

    def _fail(self, status: int, detail: str | None, headers: bytes = b"") -> None:
        if self.done:
            return
        self.done = True
        if self.recorder is not None:
            self.recorder.on_abort()
        self._release()
        self._cancel_timer()
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
        client = self.client
        if not req.body_done:
            client.close_after_response()  # the rest of the body will not be read
        client.problem(req, status, detail, headers)
