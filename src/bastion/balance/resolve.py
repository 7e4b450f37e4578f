"""Upstream host names resolved on a TTL, off the request path.

The first connection waits for the lookup; afterwards a stale answer keeps being
used while a background lookup refreshes it, so no request waits on DNS again. A
failed refresh keeps the last good addresses (logged). Connections rotate over
every address returned, IPv4 and IPv6 alike.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger("bastion.proxy")

T = TypeVar("T")


def needs_resolver(host: str | None) -> bool:
    if host is None:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


class Resolver:
    def __init__(self, host: str, port: int, ttl: float) -> None:
        self.host = host
        self.port = port
        self.ttl = ttl
        self.addresses: list[str] = []
        self.expires = 0.0
        self.turn = 0
        self.refreshing: asyncio.Task[None] | None = None

    async def connect(self, open_one: Callable[[str], Awaitable[T]]) -> T:
        """Open a connection to one of the addresses, taking them in turn and trying
        the next one when an address refuses (a host name that has an IPv6 address
        its server does not listen on)."""
        loop = asyncio.get_running_loop()
        if not self.addresses:
            await self._refresh(loop)
        elif loop.time() >= self.expires and self.refreshing is None:
            self.refreshing = loop.create_task(self._background(loop))
        addresses = self.addresses
        self.turn = start = (self.turn + 1) % len(addresses)
        error: OSError | None = None
        for i in range(len(addresses)):
            try:
                return await open_one(addresses[(start + i) % len(addresses)])
            except OSError as exc:
                error = exc
        assert error is not None
        raise error

    async def _background(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            await self._refresh(loop)
        except OSError as exc:
            log.warning(
                "upstream %s: DNS refresh failed, keeping the last addresses: %s", self.host, exc
            )
            self.expires = loop.time() + min(self.ttl, 5.0)
        finally:
            self.refreshing = None

    async def _refresh(self, loop: asyncio.AbstractEventLoop) -> None:
        # getaddrinfo runs in the loop's thread pool, never blocking the loop
        infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        found: list[str] = []
        for _family, _type, _proto, _name, sockaddr in infos:
            host = str(sockaddr[0])
            if host not in found:
                found.append(host)
        if not found:
            raise OSError(f"no address for {self.host}")
        self.addresses = found
        self.expires = loop.time() + self.ttl
