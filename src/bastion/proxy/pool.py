"""Upstream connections and their keep-alive pools.

One `Pool` per upstream endpoint. Idle connections are a LIFO stack: the most recently
used connection is the warmest (its TCP window open, least likely to have hit the
backend's own idle timeout). A connection closed by the backend while idle leaves the
stack at once (`connection_lost`), so a request is rarely written to a dead socket; when
it is, the exchange decides whether a retry is safe.

Response heads are bounded as they arrive: the connection counts the bytes fed since the
parser last delivered a head or body, and gives up past the route's limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from typing import TYPE_CHECKING, Final

import httptools

from bastion.observe.events import EventCounters
from bastion.proxy.raw_head import (
    HAVE_C,
    UpstreamHeadError,
    head_too_large,
    locate_head,
    split_fields,
)
from bastion.tls.client import describe_tls_error

if TYPE_CHECKING:
    from bastion.balance.endpoint import Endpoint
    from bastion.balance.resolve import Resolver
    from bastion.config import UpstreamAddress
    from bastion.proxy.exchange import Exchange

log = logging.getLogger("bastion.proxy")

# how long connections released beyond `max_idle` in a burst wait for the next burst
_TRIM_DELAY: Final = 1.0  # before the coldest of them are closed
_locate_head: Final = locate_head  # a C static (http1/head.py says why)
# a closed connection's parser, so that it is no cycle (http1/server.py says why)
_DONE_PARSER: Final = httptools.HttpResponseParser(object())

# The configuration's defaults, for origins that have no such settings (S3).
DEFAULT_HEAD_BYTES: Final = 64 * 1024
DEFAULT_HEAD_FIELDS: Final = 100


class UpstreamConnection(asyncio.Protocol):
    """One connection to a backend. While busy, every parser event goes to the
    exchange that owns it; while idle, any byte or EOF from the backend retires it."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        # The head being read: the bytes fed since it began (raw_head.py), `head_buf` from
        # `head_from` on; -1 once the final head is read, -2 once an answer has ended (the
        # next read starts the next head; one beginning in the same read is refused).
        self.head_buf = b""
        self.head_more: list[bytes] = []
        self.head_from = 0
        self.head_start = 0  # the head just completed, in `head_buf`
        self.head_end = 0
        # its fields, split when asked (`fields`), or llhttp's (pure: FieldsUpstreamConnection)
        self.resp_headers: list[tuple[bytes, bytes]] | None = None
        self.collected: list[tuple[bytes, bytes]] | None = None
        self.closed = False
        self.in_feed = False
        self.release_after_feed = False
        self.read_at = -1.0  # the loop's time in this read, once asked (exchange.read_time)
        # set by an exchange that finished during a feed: its `end_client` is called once
        # the feed is over and the connection is back in the pool (it ends the response)
        self.after_feed: Exchange | None = None
        # one timer, re-armed lazily: the exchange's read/send deadline, or the idle timeout
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0  # when `timer` fires
        self.tunnel_idle: float | None = None
        # Bytes fed since the parser last delivered a head or body: the head (or trailer
        # section) being read, plus at most the rest of one read (counted per read).
        self.head_bytes = 0

    # transport events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop transports are not asyncio.Transport subclasses; same interface
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            self.close()  # bytes on an idle connection: the backend is confused
            return
        if exchange.tunnelling:
            exchange.from_upstream(data)
            return
        head_from = self.head_from
        if head_from == -2:  # the first read of an answer
            self.head_from = 0
            self.head_buf = data
        elif head_from >= 0:
            if self.head_buf:
                if head_from:
                    # the interim heads before it were read: only the head being read is
                    # kept (or a flood of them would be held, and joined again at each)
                    self.head_buf = self.head_buf[head_from:]
                    self.head_from = 0
                # a head over several reads: joined once it is complete, not per read
                self.head_more.append(data)
            else:
                self.head_buf = data
        self.in_feed = True
        self.read_at = -1.0
        self.head_bytes += len(data)  # reset by the parser events that end a head or carry body
        client = exchange.client
        client.cork()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self.exchange is not None:
                self.exchange.on_upgraded(data[upgrade.args[0] :])
        except httptools.HttpParserError as exc:
            if self.exchange is not None:
                # a refusal raised in a callback below travels as the error's context
                cause = exc.__context__
                self.exchange.upstream_failed(
                    cause if isinstance(cause, UpstreamHeadError) else exc
                )
            else:
                self.close()
        finally:
            self.in_feed = False
            client.uncork()
        if self.head_bytes and self.exchange is not None:
            # a head (or trailer section) still growing past the limit: stop reading
            # now rather than let the parser keep it in memory (an exchange that ended
            # in this read reset the count; one that failed has closed the connection).
            # Most reads end with a head delivered or body, so the count is 0.
            limit = self.exchange.handler.max_response_header_bytes
            if self.head_bytes > limit:
                self.exchange.upstream_failed(head_too_large(limit))
        if self.release_after_feed:
            self.release_after_feed = False
            self.pool.release(self, self.read_at)
        after = self.after_feed
        if after is not None:
            self.after_feed = None
            after.end_client()

    def eof_received(self) -> bool:
        if self.exchange is not None:
            self.exchange.upstream_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.parser = _DONE_PARSER  # first: no cycle left, whatever the rest raises
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.pool.forget(self)
        exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            exchange.upstream_lost(exc)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_pause_writing()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_resume_writing()

    # parser events, forwarded to the exchange
    def on_message_begin(self) -> None:
        if self.exchange is None:
            # an answer nobody asked for, after the end of the last one (a body sent
            # with a 204, say): whatever follows cannot be framed, drop the connection
            self.close()

    # (no on_header: llhttp then makes no call per field; the head is read from its bytes)
    def on_headers_complete(self) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        handler = exchange.handler
        buf = self.head_buf
        if self.head_more:
            buf = self.head_buf = buf + b"".join(self.head_more)
            self.head_more = []
        begin = self.head_from
        collected = self.collected
        end = -1
        if (
            collected is not None
            and 0 <= begin < len(buf)
            and buf[begin] == 72  # "H"
            and self.head_bytes <= handler.max_response_header_bytes
        ):
            # The pure build's usual head, checked without locating it: llhttp has read
            # "HTTP/" where it begins (its other protocols start with R and I), fewer bytes
            # than the limit were fed since the last head, and it has one field a line.
            if len(collected) > handler.max_response_header_fields:
                raise UpstreamHeadError(f"upstream sent too many header fields ({len(collected)})")
        else:
            end = self._locate(buf, begin, handler.max_response_header_bytes)
            most = handler.max_response_header_fields
            # (a field line is at least 4 bytes: only a head that could hold more is counted)
            if end - self.head_start > 4 * most:
                count = buf.count(b"\r\n", self.head_start, end) - 2
                if count > most:
                    raise UpstreamHeadError(f"upstream sent too many header fields ({count})")
        self.head_bytes = 0
        status = self.parser.get_status_code()
        if status < 100 or status > 599:
            # "099" is no interim answer and "600" no final one: relaying either
            # would let the backend write the client's next status line itself
            raise UpstreamHeadError(f"status {status:03d} out of range")
        if collected is not None:  # the pure build: llhttp handed the fields over
            self.collected = []
        self.resp_headers = collected
        if status < 200 and status != 101:
            # an interim head has no body: the next head follows it at once
            if end < 0:
                end = self._locate(buf, begin, handler.max_response_header_bytes)
            self.head_from = end
            # what this read holds after it is the next head's: counted against the limit
            self.head_bytes = len(buf) - end
            exchange.on_response_head(status)
            if end == len(buf) and self.head_from == end:
                self.head_buf = b""  # nothing of the next head yet: 1xx heads never pile up
                self.head_from = 0
            return
        self.head_from = -1
        exchange.on_response_head(status)
        self.head_buf = b""

    def _locate(self, buf: bytes, begin: int, limit: int) -> int:
        """Find the head just completed in `buf` (from `begin`) and hold it to `limit`;
        its end, also kept with its start in `head_start`, `head_end`."""
        start, end = _locate_head(buf, begin) if begin >= 0 else (-1, -1)
        if start < 0:
            raise UpstreamHeadError("the response head could not be located")
        if end - start > limit:
            raise head_too_large(limit)
        self.head_start = start
        self.head_end = end
        return end

    def fields(self) -> list[tuple[bytes, bytes]]:
        """The fields of the head just completed, as llhttp's `on_header` would give them
        (made once, when a path needs the list: header rules, the cache, S3)."""
        fields = self.resp_headers
        if fields is None:
            fields = self.resp_headers = split_fields(self.head_buf, self.head_start, self.head_end)
        return fields

    def on_body(self, body: bytes) -> None:
        self.head_bytes = 0
        if self.exchange is not None:
            self.exchange.on_response_body(body)

    def on_message_complete(self) -> None:
        if self.collected:
            # trailers (the pure build): never relayed, nor left for the next answer's head
            self.collected = []
        if self.head_from < 0:
            self.head_from = -2
            # (a trailer section read on its own is not the next answer's head)
            self.head_bytes = 0
        if self.exchange is not None:
            self.exchange.on_response_end()

    # ownership
    def reset_parser(self) -> None:
        """A fresh parser after an answer to HEAD (llhttp cannot be told that an answer
        has no body because of the request it answers)."""
        self.parser = httptools.HttpResponseParser(self)
        self.head_from = -2
        self.head_buf = b""
        self.head_more = []
        self.resp_headers = None

    def close(self) -> None:
        self.closed = True
        self.exchange = None
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.exchange = None
        if self.transport is not None:
            self.transport.abort()

    def arm(self, deadline: float) -> None:
        """Watch a new deadline. A later one only moves `deadline` (the timer re-arms
        itself when it fires early); an earlier one than the pending timer (read timeout
        after the idle timeout, tunnel idle after read) reschedules it, or it fires late."""
        self.deadline = deadline
        timer = self.timer
        if timer is None:
            self.timer_at = deadline
            self.timer = self.pool.loop.call_at(deadline, self._on_timer)
        elif deadline < self.timer_at:  # (not timer.when(): a call by name, twice a request)
            timer.cancel()
            self.timer_at = deadline
            self.timer = self.pool.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.closed or self.deadline <= 0.0:
            return
        loop = self.pool.loop
        if loop.time() < self.deadline:
            self.timer_at = self.deadline
            self.timer = loop.call_at(self.deadline, self._on_timer)
            return
        exchange = self.exchange
        if exchange is not None:
            exchange.timed_out()
        else:
            self.pool.forget(self)
            self.close()


class FieldsUpstreamConnection(UpstreamConnection):
    """The pure build's connection: llhttp gives it each field (`on_header`), which costs
    less interpreted than reading the head's bytes in Python (docs/compiled.md)."""

    def __init__(self, pool: Pool) -> None:
        super().__init__(pool)
        self.collected = []

    def on_header(self, name: bytes, value: bytes) -> None:
        # (a list from __init__ to the end: no None check on the per-field path)
        self.collected.append((name, value))  # type: ignore[union-attr]


# (the compiled build scans heads in C, the pure one is handed their fields)
_CONNECTION: Final = UpstreamConnection if HAVE_C else FieldsUpstreamConnection


class Pool:
    """Keep-alive connections to one endpoint."""

    # where its exchanges count upstream errors (the registry's; None for a pool made alone)
    events: EventCounters | None = None

    def __init__(
        self,
        address: UpstreamAddress,
        loop: asyncio.AbstractEventLoop,
        max_idle: int,
        idle_timeout: float,
    ) -> None:
        self.address = address
        self.loop = loop
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.idle: list[UpstreamConnection] = []
        self.retired = False
        self.trim_timer: asyncio.TimerHandle | None = None
        self.label = address.text
        # https:// upstreams: the context built with the plan, and the SNI / verified name
        self.tls: ssl.SSLContext | None = None
        self.server_name: str | None = None
        # balancing state, kept with the pool across reloads (health and latency survive them)
        self.endpoint: Endpoint | None = None
        # host names only: addresses cached on a TTL
        self.resolver: Resolver | None = None

    def acquire(self) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    async def connect(self) -> UpstreamConnection:
        address = self.address
        if address.scheme == "unix":
            assert address.path is not None
            _, conn = await self.loop.create_unix_connection(
                lambda: _CONNECTION(self), address.path
            )
        else:
            assert address.host is not None and address.port is not None
            port = address.port
            if self.resolver is not None:
                _, conn = await self.resolver.connect(lambda host: self._open(host, port))
            else:
                _, conn = await self._open(address.host, port)
            sock = conn.transport.get_extra_info("socket") if conn.transport else None
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    async def _open(self, host: str, port: int) -> tuple[asyncio.BaseTransport, UpstreamConnection]:
        """A TCP (or TLS) connection to one address; the caller's connect timeout covers
        the TLS handshake too. With TLS, SNI and verification use the configured name,
        not the address the name resolved to."""
        if self.tls is None:
            return await self.loop.create_connection(lambda: _CONNECTION(self), host, port)
        try:
            return await self.loop.create_connection(
                lambda: _CONNECTION(self),
                host,
                port,
                ssl=self.tls,
                server_hostname=self.server_name,
            )
        except ssl.SSLError as exc:
            # re-raised as a plain connect failure whose text says what to fix
            raise OSError(exc.errno or 0, describe_tls_error(exc)) from None

    def release(self, conn: UpstreamConnection, now: float = -1.0) -> None:
        """Take back a connection whose exchange finished cleanly (`now`: the loop's time
        if the caller has read it)."""
        if conn.in_feed:
            conn.release_after_feed = True
            return
        conn.exchange = None
        if conn.closed:
            return
        if self.retired or not self.max_idle:
            conn.close()
            return
        transport = conn.transport
        if transport is not None and not transport.is_reading():
            # The response ended while its client was slow (reading paused for
            # backpressure): an idle connection must read, to see the backend
            # close it, and the next exchange must get its answer.
            transport.resume_reading()
        conn.arm((now if now >= 0.0 else self.loop.time()) + self.idle_timeout)
        self.idle.append(conn)
        if len(self.idle) > self.max_idle and self.trim_timer is None:
            # Over the limit after a burst (an HTTP/2 client sends up to
            # max_concurrent_streams requests at once; their answers release that
            # many connections together). Closing the extra ones now would reopen as
            # many on the next burst, a TCP connection per few requests; the coldest
            # beyond the limit are closed a second later if still unused.
            self.trim_timer = self.loop.call_later(_TRIM_DELAY, self._trim)

    def _trim(self) -> None:
        self.trim_timer = None
        idle = self.idle
        excess = len(idle) - self.max_idle
        if excess > 0:
            cold = idle[:excess]  # the bottom of the LIFO stack: unused the longest
            del idle[:excess]
            for conn in cold:
                conn.close()

    def forget(self, conn: UpstreamConnection) -> None:
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)

    def retire(self) -> None:
        """The endpoint left the configuration: close idle connections now and busy
        ones when their exchange ends."""
        self.retired = True
        if self.trim_timer is not None:
            self.trim_timer.cancel()
            self.trim_timer = None
        while self.idle:
            self.idle.pop().close()
        if self.endpoint is not None:
            self.endpoint.retire()


class PoolRegistry:
    """Pools keyed by endpoint and pool settings, kept across reloads so that a
    reload does not drop warm connections to backends that are still configured."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pools: dict[tuple[str, int, float, object], Pool] = {}
        # the process's event counters: the registry lives as long as the worker and
        # reaches every pool, and through the plan's BuildContext every policy
        self.events = EventCounters()

    def get(
        self,
        address: UpstreamAddress,
        max_idle: int,
        idle_timeout: float,
        tls: tuple[object, ssl.SSLContext, str | None] | None = None,
    ) -> Pool:
        """`tls` is (settings key, context, server name) for an https:// endpoint: pools
        with other TLS settings are other pools; the same settings on a reload keep the
        pool and its warm connections, and new connections use the new context (a rotated
        client certificate or CA file takes effect)."""
        key = (address.text, max_idle, idle_timeout, tls[0] if tls is not None else None)
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = Pool(address, self.loop, max_idle, idle_timeout)
            pool.events = self.events
        if tls is not None:
            pool.tls, pool.server_name = tls[1], tls[2]
        return pool

    def keep_only(self, used: set[Pool]) -> None:
        for key, pool in list(self.pools.items()):
            if pool not in used:
                pool.retire()
                del self.pools[key]

    def close(self) -> None:
        for pool in self.pools.values():
            pool.retire()
        self.pools.clear()
