"""The addresses of ``bastion proxy``: what ``--from`` and ``--to`` accept, in the forms of
``caddy reverse-proxy``, turned into listen addresses, site hosts and upstream URLs.

Pure parsing: each ``parse_*`` returns a frozen value or raises ``QuickAddressError`` whose
message names the flag, the value and the forms expected.

``--from``, without a scheme:

- a name (``api.example.com``, ``localhost``, ``bastion.test:8443``) is served over HTTPS,
  on port 443 unless one is given;
- ``:PORT``, or port 80, is plain HTTP on every interface (there is no name to certify);
- an IP address with a port (``127.0.0.1:8080``) is plain HTTP on that address: the form of
  a listen address in the config file, and what this command always meant. This is where
  bastion differs from Caddy, which would serve HTTPS there; ``https://127.0.0.1:8443``
  asks for HTTPS;
- an IP address alone is served over HTTPS on port 443.

With a scheme, the scheme decides: ``http://name[:port]`` is plain HTTP (port 80 by
default), ``https://name[:port]`` HTTPS (port 443 by default).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from bastion.config.addresses import format_authority, parse_hostname, parse_upstream

__all__ = ["FROM_FORMS", "TO_FORMS", "FromAddress", "QuickAddressError", "parse_from", "parse_to"]

FROM_FORMS = "NAME[:PORT], :PORT, IP:PORT, http://NAME[:PORT] or https://NAME[:PORT]"
TO_FORMS = ":PORT, HOST:PORT, http(s)://HOST[:PORT] or unix:/PATH"

_DEFAULT_PORTS = {"http": 80, "https": 443}


class QuickAddressError(ValueError):
    """A ``--from`` or ``--to`` value in none of the accepted forms."""


@dataclass(frozen=True, slots=True)
class FromAddress:
    """Where quick mode listens and which host it answers for."""

    scheme: Literal["http", "https"]
    host: str | None
    """The name or IP served (a site host), None for any host."""
    bind: str | None
    """The interface to listen on, None for every interface."""
    port: int

    def listen(self, port: int | None = None) -> str:
        """The listen address (config form) on ``port``, this address's own by default."""
        return format_authority(self.bind, self.port if port is None else port)

    @property
    def url(self) -> str:
        """What a client would type to reach it."""
        host = self.host or self.bind or "localhost"
        if ":" in host:
            host = f"[{host}]"
        if self.port == _DEFAULT_PORTS[self.scheme]:
            return f"{self.scheme}://{host}/"
        return f"{self.scheme}://{host}:{self.port}/"


def _ip(text: str) -> str | None:
    """``text`` as a normalised IP address, or None when it is no IP address."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _split(text: str, flag: str, forms: str) -> tuple[str, str | None]:
    """``host[:port]`` or ``[v6][:port]`` → (host without brackets, port text or None)."""
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1 :] if end > 0 else ""
        if end < 0 or (rest and not rest.startswith(":")):
            raise QuickAddressError(f"{flag} {text!r}: a bad IPv6 address; expected {forms}")
        host = text[1:end]
        if _ip(host) is None or ":" not in host:
            raise QuickAddressError(f"{flag} {text!r}: {host!r} is not an IPv6 address")
        return host, (rest[1:] if rest else None)
    if text.count(":") > 1:
        raise QuickAddressError(
            f"{flag} {text!r}: write an IPv6 address in brackets, like [::1]:8080"
        )
    host, sep, port = text.partition(":")
    return host, (port if sep else None)


def _port(text: str, whole: str, flag: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise QuickAddressError(
            f"{flag} {whole!r}: the port must be a number from 1 to 65535, got {text!r}"
        )
    return int(text)


def _host(text: str, whole: str, flag: str, forms: str) -> str:
    """A validated host name (``*.`` allowed in front) or IPv4 address, lowercased."""
    wildcard = text.startswith("*.")
    try:
        name = parse_hostname(text[2:] if wildcard else text)
    except ValueError as exc:
        raise QuickAddressError(f"{flag} {whole!r}: {exc}; expected {forms}") from None
    return "*." + name if wildcard else name


def _is_localhost(host: str) -> bool:
    return host == "localhost" or host.endswith(".localhost")


def parse_from(value: str) -> FromAddress:
    """The ``--from`` address (forms in this module's docstring)."""
    text = value.strip()
    flag = "--from"
    if not text:
        raise QuickAddressError(f"{flag} is empty; expected {FROM_FORMS}")
    scheme: str | None = None
    authority = text
    if "://" in text:
        scheme, _, authority = text.partition("://")
        scheme = scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise QuickAddressError(f"{flag} {text!r}: expected {FROM_FORMS}")
        authority = authority.removesuffix("/")
        if "/" in authority or "?" in authority or "@" in authority:
            raise QuickAddressError(
                f"{flag} {text!r}: no path, query or user info here; expected {FROM_FORMS}"
            )
    if authority.isdigit():
        raise QuickAddressError(
            f"{flag} {text!r}: expected {FROM_FORMS}; for every interface write ':{authority}'"
        )
    raw_host, raw_port = _split(authority, flag, FROM_FORMS)
    port = None if raw_port is None else _port(raw_port, text, flag)
    host: str | None = None
    if raw_host:
        host = _ip(raw_host) or _host(raw_host, text, flag, FROM_FORMS)
    elif scheme is None and port is None:
        raise QuickAddressError(f"{flag} {text!r}: expected {FROM_FORMS}")
    is_ip = host is not None and _ip(host) is not None
    if scheme is None:
        if host is None or port == 80 or (is_ip and port is not None and port != 443):
            scheme = "http"
        else:
            scheme = "https"
    if port is None:
        port = _DEFAULT_PORTS[scheme]
    if host is None:
        bind = None
    elif is_ip:
        bind = host
    elif _is_localhost(host):
        bind = "127.0.0.1"  # a local name is not served to the network
    else:
        bind = None  # a public name: every interface, as its DNS records point here
    if scheme == "https" and host is None:
        raise QuickAddressError(
            f"{flag} {text!r}: HTTPS needs a name to certify, like https://localhost:{port}"
        )
    served = host
    if is_ip and scheme == "http" and raw_port is not None and "://" not in text:
        served = None  # a listen address: every Host arriving there is proxied
    return FromAddress("https" if scheme == "https" else "http", served, bind, port)


def parse_to(value: str) -> str:
    """The ``--to`` upstream as bastion's upstream form (``http://…``, ``https://…`` or
    ``unix:/…``). ``:PORT`` means 127.0.0.1; ``HOST:443`` means HTTPS, as in Caddy."""
    text = value.strip()
    flag = "--to"
    expected = f"expected {TO_FORMS}"
    lowered = text.lower()
    if lowered.startswith("unix/"):
        # Caddy's spelling, unix//run/app.sock
        text = "unix:" + text[len("unix/") :]
        lowered = text.lower()
    if lowered.startswith("unix:"):
        path = text[len("unix:") :]
        path = path[2:] if path.startswith("///") else path
        if not path.startswith("/"):
            raise QuickAddressError(
                f"{flag} {value.strip()!r}: a unix socket path must be absolute; {expected}"
            )
        return "unix:" + path
    if "://" in text:
        scheme = lowered.partition("://")[0]
        if scheme not in _DEFAULT_PORTS:
            raise QuickAddressError(f"{flag} {text!r}: {expected}")
        try:
            parse_upstream(text)
        except ValueError as exc:
            raise QuickAddressError(f"{flag} {text!r}: {exc}") from None
        return text
    if not text or text.isdigit():
        hint = f"; to reach a port on this machine write ':{text}'" if text else ""
        raise QuickAddressError(f"{flag} {text!r}: {expected}{hint}")
    if "/" in text:
        raise QuickAddressError(f"{flag} {text!r}: no path here; {expected}")
    raw_host, raw_port = _split(text, flag, TO_FORMS)
    port = 80 if raw_port is None else _port(raw_port, text, flag)
    if not raw_host:
        host = "127.0.0.1"
    elif ":" in raw_host:
        host = raw_host
    else:
        host = _ip(raw_host) or _host(raw_host, text, flag, TO_FORMS)
        if host.startswith("*."):
            raise QuickAddressError(f"{flag} {text!r}: an upstream cannot be a wildcard")
    scheme = "https" if port == 443 else "http"
    return f"{scheme}://{format_authority(host, port)}"
