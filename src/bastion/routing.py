"""Request routing tables: host → site, then path → route.

Both lookups are dictionary probes, never a scan over every route:
- hosts: exact names in one dict, wildcard suffixes in another probed once per
  dot of the request's host (longest suffix first), then the "*" fallback;
- paths: exact paths in a dict; prefixes in a dict probed once per distinct
  prefix length (longest first), so the cost grows with the number of distinct
  prefix lengths, not with the number of routes; regex routes last, in file order,
  only when no exact or prefix route matched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, Generic, TypeVar

T = TypeVar("T")


class HostTable(Generic[T]):
    __slots__ = ("_any", "_exact", "_suffixes")

    def __init__(self) -> None:
        self._exact: dict[str, T] = {}
        self._suffixes: dict[str, T] = {}  # ".example.test" for "*.example.test"
        self._any: T | None = None

    def add(self, pattern: str, value: T) -> None:
        pattern = pattern.lower().strip("[]")
        if pattern == "*":
            self._any = value
        elif pattern.startswith("*."):
            self._suffixes[pattern[1:]] = value
        else:
            self._exact[pattern] = value

    def lookup(self, host: str) -> T | None:
        found = self._exact.get(host)
        if found is not None:
            return found
        if self._suffixes:
            dot = host.find(".")
            while dot > 0:
                found = self._suffixes.get(host[dot:])
                if found is not None:
                    return found
                dot = host.find(".", dot + 1)
        return self._any


class PathTable(Generic[T]):
    """Maps a request path to the candidates of the most specific matching route.

    A candidate list holds the routes sharing one path (they differ by methods).
    """

    __slots__ = ("_exact", "_prefix_lengths", "_prefixes", "_regexes")

    def __init__(self) -> None:
        self._exact: dict[str, list[T]] = {}
        self._prefixes: dict[str, list[T]] = {}
        self._prefix_lengths: tuple[int, ...] = ()
        self._regexes: list[tuple[re.Pattern[str], list[T]]] = []

    def add(self, kind: str, value: str, item: T) -> None:
        if kind == "exact":
            self._exact.setdefault(value, []).append(item)
        elif kind == "prefix":
            self._prefixes.setdefault(value, []).append(item)
            self._prefix_lengths = tuple(sorted({len(p) for p in self._prefixes}, reverse=True))
        else:
            for pattern, items in self._regexes:
                if pattern.pattern == value:
                    items.append(item)
                    return
            self._regexes.append((re.compile(value), [item]))

    def match(self, path: str) -> list[T] | None:
        found = self._exact.get(path)
        if found is not None:
            return found
        size = len(path)
        prefixes = self._prefixes
        for length in self._prefix_lengths:
            if length <= size:
                found = prefixes.get(path[:length])
                if found is not None:
                    return found
        for pattern, items in self._regexes:
            if pattern.search(path) is not None:
                return items
        return None

    def values(self) -> Iterable[T]:
        for group in (*self._exact.values(), *self._prefixes.values()):
            yield from group
        for _, items in self._regexes:
            yield from items


_HOST_CHARS: Final = re.compile(r"[a-z0-9.\-_~!$&'()*+,;=%]+|\[[0-9a-f:.]+\]")


def parse_host(value: str) -> str | None:
    """Validate a Host header (RFC 9110 §7.2, RFC 3986 host) and return the host
    lowercased without port, brackets or the trailing dot of a fully qualified
    name ("www.example.test." is the same site as "www.example.test", so it must
    not fall through to another site); None when it is malformed."""
    value = value.lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[: end + 1], value[end + 1 :]
    else:
        host, sep, port = value.partition(":")
        rest = ":" + port if sep else ""
    # str.isdigit() is true for "²" and other non-ASCII digits: the port is ASCII too
    port_ok = rest[1:].isdigit() and rest.isascii()
    if rest and (rest[0] != ":" or not port_ok or len(rest) > 6) and rest != ":":
        return None
    if host[-1:] == ".":
        host = host[:-1]
    if not host or _HOST_CHARS.fullmatch(host) is None:
        return None
    return host.strip("[]")


# `host_of`'s memo: raw Host values (bytes) to what `parse_host` makes of them. A client's
# connection remembers its last Host itself; this is for the first request of each
# connection and for HTTP/2's streams, where parsing cost some 4.5k instructions compiled and
# a lookup costs a few hundred. The values are the client's choice, so the table is bounded
# in entries and in the length of what it keeps (a host name is at most 253 characters).
_HOSTS_MAX: Final = 1024
_HOST_VALUE_MAX: Final = 300
_hosts: Final[dict[bytes, str | None]] = {}


def host_of(value: bytes) -> str | None:
    """`parse_host` of a raw Host value (or :authority), remembered: while a value is in the
    table (300 bytes at most, until the table is next emptied) it gives the same str object,
    whose hash the routing lookups then find already computed."""
    try:
        return _hosts[value]
    except KeyError:
        pass
    host = parse_host(value.decode("latin-1"))
    if len(value) <= _HOST_VALUE_MAX:
        if len(_hosts) >= _HOSTS_MAX:
            _hosts.clear()
        _hosts[value] = host
    return host
