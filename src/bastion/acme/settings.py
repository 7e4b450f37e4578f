"""From a Config to ACME: the issuer for its ``acme`` settings and data dir, the
challenge types it allows, and whether its https listeners must answer TLS-ALPN-01.

The only module of ``bastion.acme`` that reads the Config; the rest is given settings,
stores and names.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bastion.config.matching import is_private_acme, uses_acme
from bastion.state.files import resolve_data_dir
from bastion.tls.table import site_tls_mode

if TYPE_CHECKING:
    from bastion.acme.issuer import AcmeIssuer, AcmeSettings
    from bastion.config.models import Config

# The ACME client (cryptography, urllib's HTTP client: several MB) is imported by the
# functions that build an issuer, not with this module: a worker asks `alpn_challenge_dir`
# at start whatever its certificates, and most https configs order none.

__all__ = ["acme_settings", "alpn_challenge_dir", "default_challenges", "issuer_for"]


def default_challenges(config: Config) -> tuple[str, ...]:
    """http-01 when an http listener exists, else tls-alpn-01; dns-01 too with a hook
    (wildcard authorizations only accept dns-01)."""
    acme = config.acme
    if acme.challenges:
        return tuple(acme.challenges)
    chosen = ["http-01"] if config.listen.http else ["tls-alpn-01"]
    if acme.dns_hook is not None:
        chosen.append("dns-01")
    return tuple(chosen)


def acme_settings(config: Config) -> AcmeSettings:
    """The issuer's settings for a config's ``acme`` section."""
    from bastion.acme.issuer import AcmeSettings
    from bastion.acme.jws import Eab
    from bastion.acme.solvers import DnsHook

    acme = config.acme
    hook = (
        DnsHook(list(acme.dns_hook.command), acme.dns_hook.timeout, acme.dns_hook.propagation)
        if acme.dns_hook is not None
        else None
    )
    eab = (
        Eab(acme.eab.key_id, acme.eab.hmac_key.get_secret_value()) if acme.eab is not None else None
    )
    return AcmeSettings(
        acme.directory,
        acme.email,
        acme.trusted_roots,
        default_challenges(config),
        hook,
        eab,
        acme.key_type,
    )


def issuer_for(config: Config, data_dir: Path | None = None) -> AcmeIssuer:
    """The issuer for a config's ``acme`` settings, with the stores of ``data_dir``
    (default: the config's, resolved): Redis with ``state.redis``, else the data dir's
    files."""
    from bastion.acme.issuer import AcmeIssuer
    from bastion.state.stores import stores_for

    data_dir = data_dir if data_dir is not None else resolve_data_dir(config.data_dir)
    settings = acme_settings(config)
    stores = stores_for(data_dir)
    return AcmeIssuer(
        settings,
        stores.cert_store(config.state, settings.directory),
        stores.challenges(config.state),
        data_dir,
    )


def alpn_challenge_dir(config: Config) -> Path | None:
    """Where TLS-ALPN-01 certificates appear, when this config may use that challenge
    (then https listeners are ``AlpnListener``s); None otherwise."""
    if not config.listen.https or "tls-alpn-01" not in default_challenges(config):
        return None
    has_https = bool(config.listen.https)
    private = is_private_acme(config.acme.directory)
    for site in config.sites:
        if site_tls_mode(site, has_https, config.acme.directory) == "acme" and any(
            uses_acme(h, private) for h in site.hosts
        ):
            from bastion.acme.solvers import alpn_dir

            return alpn_dir(resolve_data_dir(config.data_dir))
    return None
