"""``bastion certs list|renew|revoke``: the certificates a config serves, from the store
(ACME certificates are read from the ``CertStore``; ordering is ``bastion.acme``'s).

Works on the store directly (no connection to a running gateway): the data dir, or Redis
with ``state.redis``. ``renew`` orders a new certificate into the store, and running
workers pick it up within ``tls.watch_interval`` (they watch the store's files, and with
Redis the serial stored there); ``revoke`` revokes with the ACME account key and removes
the certificate from the store (a running gateway keeps the one it loaded until it next
starts or reloads and then orders a new one).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.x509.oid import NameOID

from bastion.config.matching import is_private_acme, uses_acme
from bastion.state.certs import CertStore, usable
from bastion.state.files import ensure_dir, resolve_data_dir
from bastion.state.stores import stores_for
from bastion.tls.localca import LocalCA
from bastion.tls.table import LOCALHOST_NAMES, is_tls_files, site_tls_mode

if TYPE_CHECKING:
    from bastion.config.models import Config

__all__ = ["CertRow", "acme_sites", "cert_rows", "format_rows"]


@dataclass
class CertRow:
    names: tuple[str, ...]
    source: str  # "acme", "file" or "local CA"
    issuer: str = "-"
    not_after: dt.datetime | None = None
    next_renewal: str = "-"
    last_error: str = "-"

    def as_json(self) -> dict[str, object]:
        """The row for `bastion certs list --json` (null for what is not known)."""
        return {
            "names": list(self.names),
            "source": self.source,
            "issuer": None if self.issuer == "-" else self.issuer,
            "not_after": None if self.not_after is None else self.not_after.isoformat(),
            "next_renewal": None if self.next_renewal == "-" else self.next_renewal,
            "last_error": None if self.last_error in ("", "-") else self.last_error,
        }

    def days_left(self) -> str:
        if self.not_after is None:
            return "-"
        return f"{(self.not_after - dt.datetime.now(dt.UTC)).total_seconds() / 86400:.1f}"


def _issuer(cert: x509.Certificate) -> str:
    values = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else cert.issuer.rfc4514_string()


def _load(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def acme_sites(config: Config) -> list[tuple[str, ...]]:
    """The name sets ordered through ACME, as the gateway groups them."""
    has_https = bool(config.listen.https)
    private = is_private_acme(config.acme.directory)
    found = []
    for site in config.sites:
        if site_tls_mode(site, has_https, config.acme.directory) != "acme":
            continue
        names = tuple(dict.fromkeys(h for h in site.hosts if uses_acme(h, private)))
        if names:
            found.append(names)
    return found


def cert_rows(config: Config) -> list[CertRow]:
    has_https = bool(config.listen.https)
    private = is_private_acme(config.acme.directory)
    store: CertStore | None = None
    rows: list[CertRow] = []
    for site in config.sites:
        mode = site_tls_mode(site, has_https, config.acme.directory)
        if mode == "off":
            continue
        names = [n for h in site.hosts for n in (LOCALHOST_NAMES if h == "*" else (h,))]
        names = [n.strip("[]") for n in dict.fromkeys(names)]
        if mode == "acme":
            acme_names = [n for n in names if uses_acme(n, private)]
            names = [n for n in names if n not in acme_names]
            store = store or stores_for(resolve_data_dir(config.data_dir)).cert_store(
                config.state, config.acme.directory
            )
            rows.append(_acme_row(store, acme_names))
            if not names:
                continue
        if is_tls_files(site.tls):
            cert = _load(Path(site.tls.cert))
            row = CertRow(tuple(names), "file", last_error="-" if cert else "does not load")
        else:
            leaf = LocalCA(ensure_dir(resolve_data_dir(config.data_dir))).leaf(names)
            cert = _load(leaf.cert)
            row = CertRow(tuple(names), "local CA")
        if cert is not None:
            row.issuer = _issuer(cert)
            row.not_after = cert.not_valid_after_utc
        rows.append(row)
    return rows


def _acme_row(store: CertStore, names: list[str]) -> CertRow:
    row = CertRow(tuple(names), "acme", last_error="-")
    try:
        found = usable(store, names)
    except ValueError as exc:  # a shared key that does not decrypt: say so, in the row
        row.last_error = str(exc)
        return row
    if found is None:
        row.last_error = "no valid certificate in the store yet"
    else:
        cert = found.load()
        row.issuer = _issuer(cert)
        row.not_after = found.not_after
        row.next_renewal = found.renew_at().isoformat(timespec="seconds")
    status = store.read_status(names)
    if status.get("next_renewal") and found is not None:
        row.next_renewal = str(status["next_renewal"])
    if status.get("last_error"):
        row.last_error = str(status["last_error"])
    return row


def format_rows(rows: list[CertRow]) -> str:
    header = ("NAMES", "SOURCE", "ISSUER", "NOT AFTER", "DAYS LEFT", "NEXT RENEWAL", "LAST ERROR")
    table = [header] + [
        (
            ",".join(r.names),
            r.source,
            r.issuer,
            r.not_after.isoformat(timespec="seconds") if r.not_after else "-",
            r.days_left(),
            r.next_renewal,
            r.last_error,
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True))
        + "  "
        + line[-1]
        for line in table
    )
