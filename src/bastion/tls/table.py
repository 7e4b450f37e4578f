"""The SNI table of one plan: server name → certificate context.

Built once per load/reload from the sites' ``tls`` settings; the listener's dispatch
context (see ``context.py``) calls ``lookup`` once per handshake. Lookup order: the exact
name, then a wildcard one label deep (``*.example.test`` covers ``a.example.test``, not
``a.b.example.test`` — a certificate would not cover it either), else no certificate.

Without SNI (clients connecting to an IP address send none) the default certificate is
used: the only certificate when there is one, else the one whose site lists the IP
addresses or the ``*`` catch-all (local CA); when that is ambiguous the handshake fails.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bastion.config.models import TlsFiles
from bastion.tls.context import certificate_context
from bastion.tls.localca import LocalCA
from bastion.tls.store import ensure_dir, resolve_data_dir

if TYPE_CHECKING:
    from bastion.config.models import Config, Site

__all__ = ["LOCALHOST_NAMES", "SiteTLS", "TLSTable", "site_tls_mode"]

# What the "*" catch-all site is certified for by the local CA.
LOCALHOST_NAMES = ("localhost", "127.0.0.1", "::1")


def site_tls_mode(site: Site, has_https: bool) -> str:
    """'off', 'internal' or 'files'. 'auto' (and the default with an https listener)
    means the local CA until ACME lands: the config rules allow it only for local names."""
    tls = site.tls
    if isinstance(tls, TlsFiles):
        return "files"
    if tls is None:
        return "internal" if has_https else "off"
    return "internal" if tls == "auto" else tls


def _is_ip(name: str) -> bool:
    return name.replace(".", "").isdigit() or ":" in name


@dataclass(frozen=True)
class SiteTLS:
    mode: str  # "internal" or "files"
    names: tuple[str, ...]  # what SNI names select this certificate
    cert_file: str
    context: ssl.SSLContext


class TLSTable:
    def __init__(self) -> None:
        self.exact: dict[str, ssl.SSLContext] = {}
        self.wildcards: dict[str, ssl.SSLContext] = {}  # ".example.test" → context
        self.default: ssl.SSLContext | None = None
        self.sites: list[SiteTLS] = []

    def lookup(self, server_name: str | None) -> ssl.SSLContext | None:
        if server_name is None:
            return self.default
        name = server_name.lower().rstrip(".")
        found = self.exact.get(name)
        if found is None:
            dot = name.find(".")
            if dot > 0:
                found = self.wildcards.get(name[dot:])
        return found

    @classmethod
    def build(cls, config: Config) -> TLSTable | None:
        """None when there is no https listener. Issues local-CA leaves as needed
        (file I/O: called at start and on reload, never per request)."""
        has_https = bool(config.listen.https)
        if not has_https:
            return None
        table = cls()
        ca: LocalCA | None = None
        ip_sites: list[ssl.SSLContext] = []
        for site in config.sites:
            mode = site_tls_mode(site, has_https)
            if mode == "off":
                continue
            names = [
                n for host in site.hosts for n in (LOCALHOST_NAMES if host == "*" else (host,))
            ]
            names = [n.strip("[]") for n in dict.fromkeys(names)]
            if isinstance(site.tls, TlsFiles):
                cert_file, key_file = site.tls.cert, site.tls.key
            else:
                if ca is None:
                    ca = LocalCA(ensure_dir(resolve_data_dir(config.data_dir)))
                leaf = ca.leaf(names)
                cert_file, key_file = str(leaf.cert), str(leaf.key)
            context = certificate_context(cert_file, key_file)
            table.sites.append(SiteTLS(mode, tuple(names), cert_file, context))
            for name in names:
                if name.startswith("*."):
                    table.wildcards.setdefault(name[1:], context)
                else:
                    table.exact.setdefault(name, context)
            if any(_is_ip(n) for n in names):
                ip_sites.append(context)
        if len(table.sites) == 1:
            table.default = table.sites[0].context
        elif len(ip_sites) == 1:
            table.default = ip_sites[0]
        return table
