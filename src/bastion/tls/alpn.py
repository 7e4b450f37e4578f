"""TLS-ALPN-01 (RFC 8737) on an https listener.

Python's ``ssl`` chooses the certificate in the SNI callback and has no ALPN-select callback,
so the certificate cannot depend on the offered ALPN protocols. While a TLS-ALPN-01 challenge
is pending, the listener therefore accepts connections itself, peeks at the ClientHello
(``MSG_PEEK``: nothing is consumed), and hands the socket to
``loop.connect_accepted_socket`` with either the challenge certificate's context (the client
offers ``acme-tls/1`` for a name with a pending challenge) or the normal SNI-dispatching
context. Ordinary clients keep getting the real certificate during a renewal.

With no challenge pending the listener is an ordinary ``loop.create_server`` server on a
duplicate of the listening socket: the fast path is exactly the usual one. Switching closes
only the duplicate; the listening socket (and its backlog) stays open throughout.

Challenge certificates are files under ``<data dir>/acme/alpn/`` (written by the ACME thread
of whichever worker orders); each listener polls the directory's mtime every
``ALPN_POLL`` seconds, one ``stat`` call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import struct
import time
from collections.abc import Callable
from pathlib import Path

from bastion.config import Address
from bastion.tls.groups import set_groups

__all__ = ["AlpnListener", "parse_client_hello"]

log = logging.getLogger("bastion.acme")

ACME_TLS_1 = b"acme-tls/1"
_PEEK_TIMEOUT = 10.0
_MAX_HELLO = 16384 + 5
_STALE = 3600.0  # challenge files older than this are ignored (seconds)


def parse_client_hello(data: bytes) -> tuple[str | None, list[bytes]] | None:
    """(server name, ALPN protocols) from the first TLS record of a ClientHello; None when
    more bytes are needed; ``(None, [])`` when it is not a parsable ClientHello."""
    if len(data) < 5:
        return None
    if data[0] != 0x16:
        return (None, [])
    length = struct.unpack("!H", data[3:5])[0]
    if len(data) < 5 + length:
        return None if length <= _MAX_HELLO else (None, [])
    body = data[5 : 5 + length]
    try:
        if body[0] != 0x01:
            return (None, [])
        pos = 4 + 2 + 32  # handshake header, client_version, random
        pos += 1 + body[pos]  # session id
        pos += 2 + struct.unpack("!H", body[pos : pos + 2])[0]  # cipher suites
        pos += 1 + body[pos]  # compression methods
        end = pos + 2 + struct.unpack("!H", body[pos : pos + 2])[0]
        pos += 2
        name: str | None = None
        protocols: list[bytes] = []
        while pos + 4 <= min(end, len(body)):
            kind, size = struct.unpack("!HH", body[pos : pos + 4])
            ext = body[pos + 4 : pos + 4 + size]
            pos += 4 + size
            if kind == 0 and len(ext) >= 5 and ext[2] == 0:  # server_name, host_name
                size_name = struct.unpack("!H", ext[3:5])[0]
                name = ext[5 : 5 + size_name].decode("ascii", "replace").lower()
            elif kind == 16 and len(ext) >= 2:  # application_layer_protocol_negotiation
                at = 2
                while at < len(ext):
                    n = ext[at]
                    protocols.append(ext[at + 1 : at + 1 + n])
                    at += 1 + n
        return (name, protocols)
    except (IndexError, struct.error):
        return (None, [])


class _Handshake(asyncio.Protocol):
    """The CA only needs the handshake; close right after it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


def listening_socket(address: Address, reuse_port: bool) -> socket.socket:
    host = address.host
    if host is None or host in ("", "::"):
        sock = socket.create_server(
            ("", address.port),
            family=socket.AF_INET6,
            dualstack_ipv6=True,
            backlog=2048,
            reuse_port=reuse_port,
        )
    else:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server(
            (host, address.port), family=family, backlog=2048, reuse_port=reuse_port
        )
    sock.setblocking(False)
    return sock


class AlpnListener:
    """An https listener that can answer TLS-ALPN-01 challenges (see the module doc)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        context: ssl.SSLContext,
        handshake_timeout: float,
        challenge_dir: Path,
        poll: float,
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.factory = factory
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.dir = challenge_dir
        self.poll = poll
        self.server: asyncio.Server | None = None
        self.challenges: dict[str, ssl.SSLContext] = {}
        self.intercepting = False
        self._mtime = -1.0
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self._serve_normally()
        self._task = self.loop.create_task(self._watch())

    async def _serve_normally(self) -> None:
        dup = socket.socket(fileno=os.dup(self.sock.fileno()))
        self.server = await self.loop.create_server(
            self.factory,
            sock=dup,
            ssl=self.context,
            ssl_handshake_timeout=self.handshake_timeout,
        )

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.server is not None:
            self.server.close()
        if self.intercepting:
            self.loop.remove_reader(self.sock.fileno())
            self.intercepting = False
        self.sock.close()

    # -------------------------------------------------------------- watching
    async def _watch(self) -> None:
        while True:
            try:
                mtime = os.stat(self.dir).st_mtime
            except OSError:
                mtime = 0.0
            if mtime != self._mtime:
                self._mtime = mtime
                self.challenges = await asyncio.to_thread(self._load)
                await self._switch(bool(self.challenges))
            await asyncio.sleep(self.poll)

    def _load(self) -> dict[str, ssl.SSLContext]:
        found: dict[str, ssl.SSLContext] = {}
        try:
            paths = list(self.dir.glob("*.pem"))
        except OSError:
            return found
        now = time.time()
        for path in paths:
            try:
                if now - path.stat().st_mtime > _STALE:
                    continue  # left behind by a crash mid-order: not worth intercepting for
            except OSError:
                continue
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            set_groups(context)
            context.set_alpn_protocols([ACME_TLS_1.decode()])
            try:
                context.load_cert_chain(str(path))
            except (OSError, ssl.SSLError) as exc:
                log.debug("acme: cannot load the tls-alpn-01 certificate %s: %s", path, exc)
                continue
            found[path.name.removesuffix(".pem")] = context
        return found

    async def _switch(self, intercept: bool) -> None:
        if intercept == self.intercepting:
            return
        if intercept:
            if self.server is not None:
                self.server.close()  # closes the duplicate only
                self.server = None
            self.loop.add_reader(self.sock.fileno(), self._accept)
            self.intercepting = True
            log.debug("acme: https listener answering tls-alpn-01 challenges")
        else:
            self.loop.remove_reader(self.sock.fileno())
            self.intercepting = False
            await self._serve_normally()

    # ------------------------------------------------------------ intercepting
    def _accept(self) -> None:
        for _ in range(64):
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("accept failed: %s", exc)
                return
            conn.setblocking(False)
            task = self.loop.create_task(self._dispatch(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _dispatch(self, conn: socket.socket) -> None:
        try:
            hello = await asyncio.wait_for(self._peek(conn), _PEEK_TIMEOUT)
        except (TimeoutError, OSError):
            conn.close()
            return
        name, protocols = hello
        challenge = self.challenges.get(name or "") if ACME_TLS_1 in protocols else None
        try:
            if challenge is not None:
                log.info("acme: tls-alpn-01 validation connection for %s", name)
                await self.loop.connect_accepted_socket(
                    _Handshake, conn, ssl=challenge, ssl_handshake_timeout=self.handshake_timeout
                )
            else:
                await self.loop.connect_accepted_socket(
                    self.factory,
                    conn,
                    ssl=self.context,
                    ssl_handshake_timeout=self.handshake_timeout,
                )
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            log.debug("tls handshake failed: %s", exc)
            with contextlib.suppress(OSError):
                conn.close()

    async def _peek(self, conn: socket.socket) -> tuple[str | None, list[bytes]]:
        while True:
            try:
                data = conn.recv(_MAX_HELLO, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                data = None
            if data is not None:
                if not data:
                    raise OSError("closed before the ClientHello")
                parsed = parse_client_hello(data)
                if parsed is not None:
                    return parsed
                # part of it: peeked bytes keep the socket readable, so wait by time
                await asyncio.sleep(0.01)
                continue
            ready = self.loop.create_future()
            self.loop.add_reader(conn.fileno(), ready.set_result, None)
            try:
                await ready
            finally:
                self.loop.remove_reader(conn.fileno())
