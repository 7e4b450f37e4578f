"""The client's address behind trusted proxies: X-Forwarded-For parsed, never taken as text.

A proxy in `trusted_proxies` appends the address of whoever connected to it to
X-Forwarded-For. Walking the list from the right, starting at the socket peer, each
element is believed only while the hop that wrote it is trusted. Every element that is
believed is *parsed* to an address first: ``IP``, ``IP:port``, ``[IPv6]:port`` and bare
IPv6, as load balancers write them; an IPv4-mapped IPv6 address is the IPv4 one. An
element that is not an address (``unknown``, ``garbage``, ``01.2.3.4`` whose leading zero
reads as octal to some parsers, an IPv6 zone id) ends the walk: the client is then the
trusted hop that wrote it, exactly as nginx's ``real_ip_recursive`` does. So what a policy
counts, allows or denies is always a real address in one canonical spelling: a port or a
second spelling never makes a new rate-limit bucket or slips past a deny rule.

Nothing here runs unless the socket peer is a trusted proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from bastion.http.request import Request

__all__ = ["client_address", "forwarded_chain", "parse_hop"]

Trusted = Callable[[str], bool]

# Parsed elements, remembered: the same proxies and clients come back request after request.
# Bounded; an element longer than any address with a port is never one and not remembered.
_PARSED: dict[bytes, str | None] = {}
_PARSED_MAX = 4096
_LONGEST = len("[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535")


def parse_hop(element: bytes) -> str | None:
    """The address an X-Forwarded-For element names, canonically spelled, or None when it
    is not an address. ``element`` is already stripped of surrounding whitespace."""
    if len(element) > _LONGEST:
        return None
    try:
        return _PARSED[element]
    except KeyError:
        pass
    address = _parse(element)
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()
    _PARSED[element] = address
    return address


def _parse(element: bytes) -> str | None:
    try:
        text = element.decode("ascii")
    except UnicodeDecodeError:
        return None
    version = 0  # either
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not (rest[:1] == ":" and _is_port(rest[1:]))):
            return None
        version = 6
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        if not _is_port(port):
            return None
        version = 4
    else:
        host = text
    if "%" in host:
        return None  # a zone id names a link of the proxy's own machine, not a client
    try:
        address = ipaddress.ip_address(host)  # refuses leading zeros: "01.2.3.4" is no address
    except ValueError:
        return None
    if version and address.version != version:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _is_port(text: str) -> bool:
    return 0 < len(text) <= 5 and text.isdigit() and int(text) <= 65535


def _walk(xff: bytes, peer: str, trusted: Trusted) -> tuple[list[bytes], list[str]]:
    """(the elements left unverified, as sent; the addresses believed, rightmost first,
    starting with the peer). The last address believed is the client."""
    believed = [peer]
    elements = xff.split(b",")
    end = len(elements)
    while end:
        element = elements[end - 1].strip()
        if element:
            address = parse_hop(element)
            if address is None:
                break  # a trusted hop wrote something that is not an address: stop at it
            believed.append(address)
            if not trusted(address):
                end -= 1
                break  # the first hop nobody vouches for is the client
        end -= 1
    return [e for e in (e.strip() for e in elements[:end]) if e], believed


def client_address(req: Request, trusted: Trusted | None) -> str:
    """The client's address: the socket peer, or, when the peer is a trusted proxy, the
    address its X-Forwarded-For walk ends at."""
    peer = req.client_ip
    if trusted is None or req.xff is None or not trusted(peer):
        return peer
    return _walk(req.xff, peer, trusted)[1][-1]


def forwarded_chain(req: Request, trusted: Trusted) -> tuple[bytes, bytes]:
    """(X-Forwarded-For, X-Real-IP) to send upstream for a request whose peer is trusted.

    The verified part of the list is sent canonically spelled (``1.2.3.4:80`` goes on as
    ``1.2.3.4``), so a backend that walks the list itself reads the same addresses; the part
    left of the client, which nobody vouches for, goes on as it was received (what nginx and
    Envoy do), followed by the peer.
    """
    peer = req.client_ip
    if not req.xff:
        ip = peer.encode("latin-1")
        return ip, ip
    unverified, believed = _walk(req.xff, peer, trusted)
    believed.reverse()
    verified = ", ".join(believed).encode("latin-1")
    chain = b", ".join([*unverified, verified]) if unverified else verified
    return chain, believed[0].encode("latin-1")
