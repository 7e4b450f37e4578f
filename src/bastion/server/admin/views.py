"""The JSON the admin API answers with, built from what the gateway already keeps: the
pools' status snapshots, the certificate store, the config in force. Blocking readers
(`certificates`, `renew`) are run in a thread by the caller."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import TYPE_CHECKING, Any

from bastion.balance import status
from bastion.config.show import REDACTED, redact

if TYPE_CHECKING:
    from bastion.config import LoadedConfig
    from bastion.config.models import Config
    from bastion.state.snapshots import Snapshots

__all__ = ["certificates", "config_hash", "config_view", "renew", "upstreams"]


class NotFound(Exception):
    """The request names something the gateway does not have (answered 404)."""


# ----------------------------------------------------------------- upstreams
def _state(ep: dict[str, Any]) -> str:
    if ep["unhealthy_in"]:
        return "down"
    if ep["ejected_in"]:
        return "ejected"
    return "up"


def upstreams(snapshots: Snapshots, instance: int) -> dict[str, Any]:
    """Every pool of the instance, merged from its workers' status snapshots (those
    `bastion status` reads). The endpoints keep `bastion status`'s figures too."""
    pools = status.merge(status.read(snapshots, instance))
    for pool in pools:
        for ep in pool["endpoints"]:
            ep["address"] = ep["url"]
            ep["state"] = _state(ep)
            ep["latency"] = round(ep["ewma_ms"] / 1000, 6) if ep["requests"] else None
            ep.setdefault("last_check", None)  # the snapshots carry no check times (yet)
            ep.setdefault("last_error", None)
    return {"pools": pools}


def pool_counts(view: dict[str, Any]) -> dict[str, int]:
    endpoints = [ep for pool in view["pools"] for ep in pool["endpoints"]]
    return {
        "healthy": sum(1 for ep in endpoints if ep["state"] == "up"),
        "total": len(endpoints),
    }


# -------------------------------------------------------------- certificates
def _epoch(value: str) -> float | None:
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def certificates(config: Config) -> dict[str, Any]:
    """The certificates the config serves, as `bastion certs list` shows them."""
    from bastion.tls.certs import cert_rows

    now = dt.datetime.now(dt.UTC)
    found = []
    for row in cert_rows(config):
        after = row.not_after
        found.append(
            {
                "names": list(row.names),
                "issuer": None if row.issuer == "-" else row.issuer,
                "not_after": after.timestamp() if after else None,
                "days_left": round((after - now).total_seconds() / 86400, 2) if after else None,
                "next_renewal": _epoch(row.next_renewal) if row.next_renewal != "-" else None,
                "last_error": None if row.last_error == "-" else row.last_error,
                "source": row.source,
            }
        )
    return {"certificates": found}


def earliest(view: dict[str, Any]) -> dict[str, float | None]:
    dated = [c for c in view["certificates"] if c["not_after"] is not None]
    if not dated:
        return {"earliest_expiry": None, "days_left": None}
    first = min(dated, key=lambda c: c["not_after"])
    return {"earliest_expiry": first["not_after"], "days_left": first["days_left"]}


def renew(config: Config, name: str) -> dict[str, Any]:
    """Order a new certificate for the ACME site that has `name`, as `bastion certs renew`
    does: into the store, where every worker's certificate watcher finds it (within
    tls.watch_interval). Raises NotFound for a name no ACME site has, AcmeError when the
    CA refuses."""
    from bastion.acme.settings import issuer_for
    from bastion.tls.certs import acme_sites

    wanted = name.strip().lower()
    chosen = next((s for s in acme_sites(config) if wanted in {n.lower() for n in s}), None)
    if chosen is None:
        return _renew_local(config, wanted, name)
    files = issuer_for(config).obtain(list(chosen), force=True)
    return {
        "renewed": list(chosen),
        "serial": f"{files.serial:x}",
        "not_after": files.not_after.timestamp(),
    }


def _renew_local(config: Config, wanted: str, name: str) -> dict[str, Any]:
    """A new leaf of the local CA for the site that has `name`; every worker's certificate
    watcher loads the rewritten files (within tls.watch_interval)."""
    from cryptography import x509

    from bastion.state.files import ensure_dir, resolve_data_dir
    from bastion.tls.certs import cert_rows
    from bastion.tls.localca import LocalCA

    row = next(
        (r for r in cert_rows(config) if r.source == "local CA" and wanted in r.names), None
    )
    if row is None:
        raise NotFound(f"no certificate of ACME or of the local CA has the name {name!r}")
    leaf = LocalCA(ensure_dir(resolve_data_dir(config.data_dir))).leaf(list(row.names), force=True)
    cert = x509.load_pem_x509_certificate(leaf.cert.read_bytes())
    return {
        "renewed": list(row.names),
        "serial": f"{cert.serial_number:x}",
        "not_after": cert.not_valid_after_utc.timestamp(),
    }


# -------------------------------------------------------------------- config
def _redacted(value: Any, secrets: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: _redacted(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v, secrets) for v in value]
    if isinstance(value, str):
        if value == "**********":  # a secret field (SecretStr) as pydantic dumps it
            return REDACTED
        return redact(value, secrets)
    return value


def config_view(loaded: LoadedConfig) -> dict[str, Any]:
    """The config in force with its defaults, every secret replaced by "<redacted>":
    secret fields, and every value substituted from ${ENV} or ${file:} wherever it
    stands (an upstream URL's password too)."""
    dumped = loaded.as_json()
    return {
        "source": str(loaded.source) if loaded.source is not None else None,
        "config": _redacted(dumped, loaded.secrets),
    }


def config_hash(view: dict[str, Any]) -> str:
    """Names the config in force (of the redacted form: the hash tells nothing of a
    secret)."""
    text = json.dumps(view["config"], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
