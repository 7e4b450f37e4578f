"""What several checks read off the config: the name sets certified through ACME, which CA
the ACME directory belongs to, and the TCP listeners."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from bastion.config.addresses import UnixAddress
from bastion.config.matching import is_private_acme, uses_acme
from bastion.tls.table import site_tls_mode

if TYPE_CHECKING:
    from bastion.config import Address, Config

__all__ = ["Listener", "acme_name_sets", "ca_identity", "is_letsencrypt_production", "listeners"]

LETSENCRYPT_PRODUCTION_HOST = "acme-v02.api.letsencrypt.org"

# The CAA identity (RFC 8659 issuer domain) each known ACME CA checks, by directory host.
_CA_IDENTITIES = (
    (".api.letsencrypt.org", "letsencrypt.org"),  # production and staging
    ("acme.zerossl.com", "sectigo.com"),
    (".api.pki.goog", "pki.goog"),
    ("api.buypass.com", "buypass.com"),
    ("api.test4.buypass.no", "buypass.com"),
    ("acme.ssl.com", "ssl.com"),
)


def ca_identity(directory: str) -> str | None:
    """The domain a CAA ``issue`` record must name for this CA, None when unknown."""
    host = (urlsplit(directory).hostname or "").lower()
    for suffix, identity in _CA_IDENTITIES:
        if host == suffix.lstrip(".") or host.endswith(suffix):
            return identity
    return None


def is_letsencrypt_production(directory: str) -> bool:
    return (urlsplit(directory).hostname or "").lower() == LETSENCRYPT_PRODUCTION_HOST


def acme_name_sets(config: Config) -> list[tuple[str, ...]]:
    """Each ACME site's names, as ordered (one certificate each), the way the TLS table
    picks them."""
    has_https = bool(config.listen.https)
    directory = config.acme.directory
    private = is_private_acme(directory)
    sets = []
    for site in config.sites:
        if site_tls_mode(site, has_https, directory) != "acme":
            continue
        names = tuple(dict.fromkeys(h for h in site.hosts if uses_acme(h, private)))
        if names:
            sets.append(names)
    return sets


@dataclass(frozen=True)
class Listener:
    key: str  # the config key, e.g. listen.http
    address: Address


def listeners(config: Config) -> list[Listener]:
    """Every TCP address bastion would bind."""
    found = [Listener("listen.http", a) for a in config.listen.http]
    found += [Listener("listen.https", a) for a in config.listen.https]
    if config.admin.listen is not None and not isinstance(config.admin.listen, UnixAddress):
        found.append(Listener("admin.listen", config.admin.listen))
    if config.metrics.listen is not None:
        found.append(Listener("metrics.listen", config.metrics.listen))
    return found
