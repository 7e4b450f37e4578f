"""Listening sockets the worker binds itself, so that the event loop need not resolve
the address.

uvloop's `create_server` with a host resolves it through libuv's thread pool even when it
is an IP address or every interface, and the first resolution starts the pool's four
threads; they then sit idle for the life of the worker, with their stacks and a malloc
arena each. An address written as an IP literal, or every interface, needs no resolving:
the socket is bound here and handed to the loop. A name (``localhost:8080``) still goes
to the loop, which binds every address the name resolves to.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Any

from bastion.config import Address

__all__ = ["bind_listener", "where_to_listen"]

# no IPv6 on this machine (a kernel without it, or a container with it turned off)
_NO_IPV6 = (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT)


def bind_listener(address: Address, reuse_port: bool, backlog: int) -> socket.socket | None:
    """A bound, listening, non-blocking socket for `address`, or None when its host is a
    name (the loop resolves it). Every interface is one dual-stack socket (IPv4 and IPv6),
    or IPv4 alone where the machine has no IPv6; ``[::]`` is IPv6 only, as the loop binds
    it. Raises OSError when it cannot be bound."""
    host = address.host
    if not host:
        sock = None
        if socket.has_ipv6:
            try:
                sock = socket.create_server(
                    ("", address.port),
                    family=socket.AF_INET6,
                    dualstack_ipv6=True,
                    backlog=backlog,
                    reuse_port=reuse_port,
                )
            except OSError as exc:
                if exc.errno not in _NO_IPV6:
                    raise
        if sock is None:
            sock = socket.create_server(
                ("0.0.0.0", address.port), backlog=backlog, reuse_port=reuse_port
            )
    else:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return None
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        sock = socket.create_server(
            (host, address.port), family=family, backlog=backlog, reuse_port=reuse_port
        )
    sock.setblocking(False)
    return sock


def where_to_listen(address: Address, reuse_port: bool, backlog: int) -> dict[str, Any]:
    """The arguments of the loop's `create_server` that say where to listen: a socket bound
    here, or, for a name, the host and port for the loop to resolve."""
    sock = bind_listener(address, reuse_port, backlog)
    if sock is not None:
        return {"sock": sock, "backlog": backlog}
    return {
        "host": address.host,
        "port": address.port,
        "reuse_port": reuse_port or None,
        "backlog": backlog,
    }
