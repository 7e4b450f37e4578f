"""Listen addresses (``127.0.0.1:8080``, ``[::1]:8080``, ``:8080``) and upstream addresses
(``http://host:port``, ``https://host:port``, ``unix:/run/app.sock``).

Pure parsing: each ``parse_*`` takes the raw value and returns a frozen dataclass or raises
``ValueError`` with a message that says what is accepted.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Literal

from bastion.config.show import show

__all__ = [
    "UNIX_PREFIX",
    "Address",
    "AdminAddressValue",
    "UnixAddress",
    "UpstreamAddress",
    "format_authority",
    "is_local",
    "parse_address",
    "parse_endpoint",
    "parse_hostname",
    "parse_upstream",
]

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_LISTEN_HINT = "expected host:port, [ipv6]:port or :port (all interfaces), like 127.0.0.1:8080"
_UPSTREAM_HINT = "expected http://host:port, https://host:port or unix:/absolute/path.sock"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_hostname(text: str) -> str:
    """Validate a DNS name or an IPv4 address and return it lowercased.

    Raises ``ValueError`` (with a message naming ``text``) when it is neither.
    """
    name = text.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(p) for p in name.split(".")):
        raise ValueError(f"{show(text)} is not a valid host name or IP address")
    if name.replace(".", "").isdigit():
        # All-numeric names are IPv4 addresses or nothing: "300.1.1.1" is a typo, not a name.
        try:
            ipaddress.IPv4Address(name)
        except ValueError:
            raise ValueError(f"{show(text)} is not a valid IPv4 address") from None
    return name


def _parse_ipv6(text: str) -> str:
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        raise ValueError(f"{show(text)} is not a valid IPv6 address") from None


def _parse_port(text: str, whole: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(
            f"port must be a number from 1 to 65535, got {show(text)} in {show(whole)}"
        )
    return int(text)


def _split_host_port(text: str, hint: str) -> tuple[str | None, str | None]:
    """Split ``host:port`` / ``[v6]:port`` / ``host`` / ``[v6]`` into its parts (unvalidated).

    The host comes back without brackets; an IPv6 host is recognised by containing ``:``.
    """
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"missing ']' after the IPv6 address in {show(text)}; {hint}")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"unexpected {show(rest)} after ']' in {show(text)}; {hint}")
        return host, (rest[1:] if rest else None)
    if text.count(":") > 1:
        raise ValueError(f"IPv6 addresses must be in brackets, like [::1]:8080, got {show(text)}")
    host, sep, port = text.partition(":")
    return host, (port if sep else None)


def format_authority(host: str | None, port: int) -> str:
    """``host:port`` with IPv6 hosts in brackets; ``:port`` when ``host`` is None."""
    if host is None:
        return f":{port}"
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class Address:
    """A listen address. ``host`` None means every interface."""

    host: str | None
    port: int

    def __str__(self) -> str:
        return format_authority(self.host, self.port)


def parse_address(value: object) -> Address:
    """Parse ``127.0.0.1:8080``, ``localhost:8080``, ``[::1]:8080`` or ``:8080``."""
    if isinstance(value, Address):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"{_LISTEN_HINT}; to listen on every interface write ':{value}'")
    if not isinstance(value, str):
        raise ValueError(f"{_LISTEN_HINT}, got {show(value)}")
    text = value.strip()
    if text.isdigit():
        raise ValueError(f"{_LISTEN_HINT}; to listen on every interface write ':{text}'")
    host, port = _split_host_port(text, _LISTEN_HINT)
    if port is None:
        raise ValueError(f"missing port in {show(text)}; {_LISTEN_HINT}")
    port_number = _parse_port(port, text)
    if not host:
        if text.startswith("["):
            raise ValueError(f"empty IPv6 address in {show(text)}; {_LISTEN_HINT}")
        return Address(None, port_number)
    if text.startswith("["):
        return Address(_parse_ipv6(host), port_number)
    return Address(parse_hostname(host), port_number)


@dataclass(frozen=True, slots=True)
class UpstreamAddress:
    """Where a proxy route sends requests: an HTTP(S) host and port, or a Unix socket."""

    scheme: Literal["http", "https", "unix"]
    host: str | None
    port: int | None
    path: str | None
    text: str = field(compare=False)

    def __str__(self) -> str:
        return self.text

    @property
    def authority(self) -> str:
        """The ``Host`` value for this upstream: ``host:port`` (IPv6 in brackets), or the host
        alone on the scheme's default port (what a virtual host such as a SaaS API expects,
        like a browser or curl would send)."""
        if self.scheme == "unix" or self.host is None or self.port is None:
            return "localhost"
        if self.scheme == "https" and self.port == 443:
            return f"[{self.host}]" if ":" in self.host else self.host
        return format_authority(self.host, self.port)


def parse_upstream(value: object) -> UpstreamAddress:
    """Parse ``http://host[:port][/]``, ``https://host[:port]``, ``http://[::1]:8000`` or
    ``unix:/run/app.sock``."""
    if isinstance(value, UpstreamAddress):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{_UPSTREAM_HINT}, got {show(value)}")
    text = value.strip()
    scheme, sep, rest = text.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https", "unix"):
        raise ValueError(
            f"only http://, https:// and unix: upstreams are supported; {_UPSTREAM_HINT}, "
            f"got {show(text)}"
        )
    if scheme == "unix":
        # "unix:///run/app.sock" (empty authority) means the same as "unix:/run/app.sock".
        path = rest[2:] if rest.startswith("///") else rest
        if not path.startswith("/"):
            raise ValueError(
                f"a unix socket path must be absolute, like unix:/run/app.sock, got {show(text)}"
            )
        return UpstreamAddress("unix", None, None, path, text)
    if not rest.startswith("//"):
        raise ValueError(f"{_UPSTREAM_HINT}, got {show(text)}")
    authority, _, path = rest[2:].partition("/")
    if path or any(c in authority for c in "?#"):
        raise ValueError(
            f"an upstream must not have a path, query or fragment, got {show(text)}; "
            "use strip_prefix on the route to change the path sent upstream"
        )
    if "@" in authority:
        raise ValueError(f"user info is not allowed in an upstream address, got {show(text)}")
    host, port = _split_host_port(authority, _UPSTREAM_HINT)
    if not host:
        raise ValueError(f"missing host in {show(text)}; {_UPSTREAM_HINT}")
    port_number = _DEFAULT_PORTS[scheme] if port is None else _parse_port(port, text)
    host = _parse_ipv6(host) if authority.startswith("[") else parse_hostname(host)
    return UpstreamAddress("https" if scheme == "https" else "http", host, port_number, None, text)


def client_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A peer's address as the socket reports it, parsed; an IPv4 client reaching a
    dual-stack listener (``::ffff:10.0.0.1``) is its IPv4 address, so that IPv4 rules
    match it. None when it is no IP address (a Unix socket)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_endpoint(value: str) -> UpstreamAddress:
    """An http:// or https:// endpoint URL (no path)."""
    address = parse_upstream(value.strip().rstrip("/"))
    if address.scheme == "unix":
        raise ValueError(f"expected an http:// or https:// URL, got {show(value)}")
    return address

# ------------------------------------------------ the admin API's addresses
UNIX_PREFIX = "unix:"


@dataclass(frozen=True, slots=True)
class UnixAddress:
    """A Unix socket path (absolute)."""

    path: str

    def __str__(self) -> str:
        return UNIX_PREFIX + self.path


AdminAddressValue = Address | UnixAddress


def is_local(address: AdminAddressValue) -> bool:
    """Only this machine can reach it: a Unix socket, a loopback address, localhost."""
    if isinstance(address, UnixAddress):
        return True
    host = address.host
    if host is None:
        return False  # every interface
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
