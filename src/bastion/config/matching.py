"""What a site and a route match on: host patterns, route paths and request methods.

Pure parsing; the matcher tables themselves are built by the plan from these values.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Literal

from bastion.config.addresses import parse_hostname
from bastion.config.show import show
from bastion.http.target import canonical_path

__all__ = [
    "LOCAL_SUFFIXES",
    "RoutePath",
    "is_local_name",
    "parse_host_pattern",
    "parse_method",
    "parse_route_path",
]

LOCAL_SUFFIXES = (".localhost", ".test", ".local", ".internal")
"""Names no public CA will certify (RFC 2606, RFC 6761, RFC 6762, ICANN's .internal)."""


def is_local_name(host: str) -> bool:
    """True for a site host that gets a local-CA certificate: ``*`` (served as localhost),
    ``localhost``, IP addresses, single-label names and the reserved suffixes."""
    name = host.lower().strip("[]")
    if name in ("*", "localhost") or "." not in name.removeprefix("*."):
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    return name.endswith(LOCAL_SUFFIXES)


def uses_acme(host: str, private_ca: bool = False) -> bool:
    """True for a ``tls: auto`` host certified through ACME. Public names always are; with
    a private ACME CA (a directory other than Let's Encrypt's, like Pebble) the reserved
    suffixes ``.test``, ``.local`` and ``.internal`` are too. ``localhost``, ``*.localhost``,
    IP addresses, single-label names and ``*`` stay with the local CA."""
    if not is_local_name(host):
        return True
    if not private_ca:
        return False
    name = host.lower().strip("[]")
    if name in ("*", "localhost") or "." not in name.removeprefix("*."):
        return False
    try:
        ipaddress.ip_address(name)
        return False
    except ValueError:
        pass
    return not name.endswith(".localhost")


def is_private_acme(directory: object) -> bool:
    """A configured ACME directory that is not Let's Encrypt's (then reserved names may be
    ordered from it)."""
    if not isinstance(directory, str) or not directory.strip():
        return False
    from urllib.parse import urlsplit

    host = urlsplit(directory.strip()).hostname or ""
    return not host.endswith("api.letsencrypt.org")


# RFC 9110 section 5.6.2: token = 1*tchar
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PATH_HINT = "expected a path like /api/ (prefix), = /health (exact) or ~ ^/v[0-9]+/ (regex)"


def parse_host_pattern(value: object) -> str:
    """Validate a site host: an exact name or IP, ``*.suffix``, or ``*``. Returns it lowercased.

    IPv6 addresses are stored in brackets (``[::1]``), the way they appear in a Host header.
    """
    if not isinstance(value, str):
        raise ValueError(f"expected a host name like api.example.test, got {show(value)}")
    text = value.strip().lower()
    if text == "*":
        return text
    if (text.startswith("[") and text.endswith("]")) or text.count(":") > 1:
        try:
            return f"[{ipaddress.IPv6Address(text.strip('[]'))}]"
        except ValueError:
            raise ValueError(f"{show(value)} is not a valid IPv6 address") from None
    if ":" in text:
        raise ValueError(
            f"a site host must not include a port, got {show(value)}; "
            "sites match a host on every listener"
        )
    if text.startswith("*."):
        suffix = text[2:]
        if "*" in suffix:
            raise ValueError(
                f"only one leading wildcard is allowed, like *.example.test, got {show(value)}"
            )
        return "*." + parse_hostname(suffix)
    if "*" in text:
        raise ValueError(
            f"a wildcard must be the whole first label, like *.example.test, got {show(value)}"
        )
    return parse_hostname(text)


def parse_method(value: object) -> str:
    """Validate an HTTP method name (an RFC 9110 token) and return it uppercased."""
    if not isinstance(value, str) or not _TOKEN.fullmatch(value.strip()):
        raise ValueError(f"expected an HTTP method like GET or POST, got {show(value)}")
    return value.strip().upper()


@dataclass(frozen=True, slots=True)
class RoutePath:
    """A route's path matcher.

    ``kind`` is ``exact`` (``= /health``), ``prefix`` (``/api/``) or ``regex``
    (``~ ^/v[0-9]+/``); ``value`` is the path or the regular expression; ``text`` is what the
    file said.
    """

    kind: Literal["exact", "prefix", "regex"]
    value: str
    text: str = field(compare=False)

    def __str__(self) -> str:
        return self.text


def _check_plain_path(path: str, original: str) -> str:
    """The path in the canonical form requests are matched in ("/caf%C3%A9/" for "/café/",
    "/a/b" for "/a//b"), so that a route matches every spelling of its path."""
    if not path.startswith("/"):
        raise ValueError(f"a route path must start with '/', got {show(original)}; {_PATH_HINT}")
    if any(c.isspace() or c in "?#" for c in path):
        raise ValueError(
            f"a route path must not contain spaces, '?' or '#', got {show(original)} "
            "(the query string is not part of the path)"
        )
    try:
        return canonical_path(path.encode("utf-8").decode("latin-1"))
    except ValueError as refused:
        raise ValueError(f"{refused} ({show(original)})") from None


def parse_route_path(value: object) -> RoutePath:
    """Parse a route path: ``= /x`` exact, ``~ regex`` regular expression, else a prefix."""
    if isinstance(value, RoutePath):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{_PATH_HINT}, got {show(value)}")
    text = value.strip()
    if text.startswith("="):
        path = _check_plain_path(text[1:].strip(), value)
        return RoutePath("exact", path, text)
    if text.startswith("~"):
        pattern = text[1:].strip()
        if not pattern:
            raise ValueError(f"missing regular expression after '~' in {show(value)}")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {show(pattern)}: {exc}") from None
        return RoutePath("regex", pattern, text)
    return RoutePath("prefix", _check_plain_path(text, value), text)
