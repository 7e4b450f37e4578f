"""Per-site facts worked out once per plan: how the site is served (its TLS mode) and the
Strict-Transport-Security line its HTTPS responses carry. Builders, the compiler and
`bastion check` read these instead of recomputing them from the config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bastion.config.defaults import sts_value
from bastion.tls.table import site_tls_mode

if TYPE_CHECKING:
    from bastion.config.models import Config, Site

__all__ = ["SiteFacts", "hsts_line", "site_facts"]


@dataclass(frozen=True, slots=True)
class SiteFacts:
    tls_mode: str
    """'off', 'internal', 'files' or 'acme' (see ``tls.table.site_tls_mode``)."""
    secure: bool
    """Served over HTTPS (then its plain-HTTP requests are redirected)."""
    hsts: bytes
    """The Strict-Transport-Security header line of its responses; empty when none."""


def site_facts(config: Config) -> tuple[SiteFacts, ...]:
    """The facts of every site, in config order."""
    has_https = bool(config.listen.https)
    directory = config.acme.directory
    facts = []
    for site in config.sites:
        mode = site_tls_mode(site, has_https, directory)
        secure = mode != "off"
        facts.append(SiteFacts(mode, secure, hsts_line(site) if secure else b""))
    return tuple(facts)


def hsts_line(site: Site) -> bytes:
    if site.hsts is False:
        return b""
    return b"Strict-Transport-Security: " + sts_value(site.hsts).encode() + b"\r\n"
