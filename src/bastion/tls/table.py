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

from bastion.config.matching import is_private_acme, uses_acme
from bastion.config.plain import is_a
from bastion.state.files import ensure_dir, resolve_data_dir
from bastion.tls.context import certificate_context

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from typing_extensions import TypeIs

    from bastion.config.models import Config, Site
    from bastion.config.tls_models import TlsFiles
    from bastion.state.certs import CertFiles
    from bastion.tls.localca import LocalCA

    AcmeStored = Callable[[list[str]], CertFiles | None]

__all__ = ["LOCALHOST_NAMES", "PendingACME", "SiteTLS", "TLSTable", "site_tls_mode"]

# What the "*" catch-all site is certified for by the local CA.
LOCALHOST_NAMES = ("localhost", "127.0.0.1", "::1")


def is_tls_files(tls: object) -> TypeIs[TlsFiles]:
    """A site's ``tls`` names certificate files (the model or its plain node)."""
    return is_a(tls, "TlsFiles")


def site_tls_mode(site: Site, has_https: bool, acme_directory: str | None = None) -> str:
    """'off', 'internal', 'files' or 'acme'. 'auto' (and the default with an https
    listener) is 'acme' when some host is certified through ACME (see ``uses_acme``; the
    local names of such a site still get a local-CA certificate), else 'internal'."""
    tls = site.tls
    if is_tls_files(tls):
        return "files"
    if tls is None and not has_https:
        return "off"
    if tls is None or tls == "auto":
        private = is_private_acme(acme_directory)
        return "acme" if any(uses_acme(h, private) for h in site.hosts) else "internal"
    return tls


def _is_ip(name: str) -> bool:
    return name.replace(".", "").isdigit() or ":" in name


@dataclass(frozen=True)
class PendingACME:
    """Names of a site waiting for an ACME certificate (not in the table meanwhile: their
    handshakes fail with ``unrecognized_name``)."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class SiteTLS:
    mode: str  # "internal", "files" or "acme"
    names: tuple[str, ...]  # what SNI names select this certificate
    cert_file: str
    context: ssl.SSLContext
    key_file: str = ""


class TLSTable:
    def __init__(self) -> None:
        self.exact: dict[str, ssl.SSLContext] = {}
        self.wildcards: dict[str, ssl.SSLContext] = {}  # ".example.test" → context
        self.default: ssl.SSLContext | None = None
        self.sites: list[SiteTLS] = []
        self.pending: list[PendingACME] = []
        # names the local CA would certify at start; filled only by a build that does not
        # issue (``bastion check``, the doctor), which must leave the data dir untouched
        self.unissued: list[tuple[str, ...]] = []
        self.profile = "intermediate"

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

    def _add(self, site: SiteTLS) -> None:
        self.sites.append(site)
        for name in site.names:
            if name.startswith("*."):
                self.wildcards.setdefault(name[1:], site.context)
            else:
                self.exact.setdefault(name, site.context)

    def install_acme(
        self, names: tuple[str, ...], cert_file: str, context: ssl.SSLContext, key_file: str = ""
    ) -> bool:
        """Serve a certificate that arrived after the table was built (new handshakes use it
        at once). False when these names are no longer pending in this table."""
        pending = PendingACME(names)
        if pending not in self.pending:
            return False
        self.pending.remove(pending)
        self._add(SiteTLS("acme", names, cert_file, context, key_file))
        return True

    def replace(self, names: tuple[str, ...], context: ssl.SSLContext) -> bool:
        """Swap the certificate of the entry for ``names`` (renewal, changed files): new
        handshakes get it at once, established connections keep theirs. False when no
        entry has these names."""
        for index, site in enumerate(self.sites):
            if site.names != names:
                continue
            old = site.context
            self.sites[index] = SiteTLS(site.mode, names, site.cert_file, context, site.key_file)
            for table in (self.exact, self.wildcards):
                for key, value in table.items():
                    if value is old:
                        table[key] = context
            if self.default is old:
                self.default = context
            return True
        return False

    @classmethod
    def build(
        cls,
        config: Config,
        tls_modes: Sequence[str],
        acme_store: AcmeStored | None = None,
        *,
        issue: bool = True,
    ) -> TLSTable | None:
        """None when there is no https listener. Issues local-CA leaves as needed
        (file I/O: called at start and on reload, never per request); with ``issue``
        false, creates nothing (no CA, no leaf, no directory) and lists those names in
        ``unissued`` instead. Configured certificate files are loaded either way.

        ``tls_modes`` holds each site's TLS mode in config order, as the plan compiler
        worked them out (`site_tls_mode`). ``acme_store`` gives the stored ACME
        certificate for a name set, if usable; by default the file ``CertStore`` of the
        config's data dir and ACME directory (the table reads certificates, it never
        orders them)."""
        if not config.listen.https:
            return None
        table = cls()
        profile = table.profile = config.tls.profile
        ca: LocalCA | None = None
        ip_sites: list[ssl.SSLContext] = []
        for site, mode in zip(config.sites, tls_modes, strict=True):
            if mode == "off":
                continue
            names = [
                n for host in site.hosts for n in (LOCALHOST_NAMES if host == "*" else (host,))
            ]
            names = [n.strip("[]") for n in dict.fromkeys(names)]
            if mode == "acme":
                private = is_private_acme(config.acme.directory)
                acme_names = tuple(n for n in names if uses_acme(n, private))
                names = [n for n in names if n not in acme_names]
                if acme_store is None:
                    # reads only: a missing store directory is no certificate
                    acme_store = _file_store_lookup(config)
                stored = acme_store(list(acme_names))
                if stored is None:
                    table.pending.append(PendingACME(acme_names))
                else:
                    context = certificate_context(str(stored.cert), str(stored.key), profile)
                    table._add(
                        SiteTLS("acme", acme_names, str(stored.cert), context, str(stored.key))
                    )
                if not names:
                    continue
                mode = "internal"
            if is_tls_files(site.tls):
                cert_file, key_file = site.tls.cert, site.tls.key
            elif not issue:
                table.unissued.append(tuple(names))
                continue
            else:
                if ca is None:
                    from bastion.tls.localca import LocalCA

                    ca = LocalCA(ensure_dir(resolve_data_dir(config.data_dir)))
                leaf = ca.leaf(names)
                cert_file, key_file = str(leaf.cert), str(leaf.key)
            context = certificate_context(cert_file, key_file, profile)
            table._add(SiteTLS(mode, tuple(names), cert_file, context, key_file))
            if any(_is_ip(n) for n in names):
                ip_sites.append(context)
        if len(table.sites) == 1:
            table.default = table.sites[0].context
        elif len(ip_sites) == 1:
            table.default = ip_sites[0]
        return table


def _file_store_lookup(config: Config) -> AcmeStored:
    """Usable certificates from the file ``CertStore`` of ``config``'s data dir."""
    from bastion.state.certs import FileCertStore, usable

    store = FileCertStore(resolve_data_dir(config.data_dir), config.acme.directory)
    return lambda names: usable(store, names)
