"""Certificates already on disk: the files the config names, the ACME store, the local CA.
Expired or not matching their key, or with a chain a client cannot follow: FAIL; expiring
within a week: WARN."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import AuthorityInformationAccessOID

from bastion.config.tls_models import TlsFiles
from bastion.doctor.result import Finding, fail, passed, skip, warn
from bastion.state.certs import FileCertStore

if TYPE_CHECKING:
    from bastion.doctor.context import DoctorContext

__all__ = ["check_certificates", "judge_pair"]

SOON = dt.timedelta(days=7)


def _when(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _has_ca_issuers(cert: x509.Certificate) -> bool:
    """A public CA's certificates say where their issuer can be fetched (AIA caIssuers);
    a private CA's usually do not."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return False
    return any(d.access_method == AuthorityInformationAccessOID.CA_ISSUERS for d in aia)


def _chain_problem(chain: list[x509.Certificate]) -> str | None:
    for index in range(len(chain) - 1):
        try:
            chain[index].verify_directly_issued_by(chain[index + 1])
        except Exception:  # ValueError, TypeError, InvalidSignature: all mean "not its issuer"
            return (
                f"certificate {index + 2} of the file did not issue certificate {index + 1} "
                "(wrong order, or intermediates of another chain)"
            )
    top = chain[-1]
    if len(chain) == 1 and top.issuer != top.subject and _has_ca_issuers(top):
        return (
            f"the file holds the leaf only; its issuer ({top.issuer.rfc4514_string()}) is "
            "missing: clients that do not fetch it themselves (curl, Python, Go, Android apps) "
            "fail"
        )
    return None


def judge_pair(cert_path: Path, key_path: Path | None, label: str, now: dt.datetime) -> Finding:
    """One certificate file (and its key, if given) judged as a client would."""
    try:
        chain = x509.load_pem_x509_certificates(cert_path.read_bytes())
    except PermissionError:
        return warn(f"{label}: {cert_path} is not readable by this user: not checked")
    except (OSError, ValueError) as exc:
        return fail(f"{label}: {cert_path} is not a PEM certificate: {exc}", "replace the file")
    leaf = chain[0]
    if key_path is not None:
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except PermissionError:
            key = None
        except (OSError, ValueError, TypeError) as exc:
            return fail(f"{label}: the key {key_path} does not load: {exc}", "replace the key")
        if key is not None and key.public_key() != leaf.public_key():
            return fail(
                f"{label}: {key_path} is not the key of {cert_path}",
                "put the certificate and the key that were issued together",
            )
    problem = _chain_problem(chain)
    if problem:
        return fail(
            f"{label}: {cert_path}: {problem}",
            "use the full chain file (fullchain.pem: the leaf, then its intermediates, in order)",
        )
    expired = [c for c in chain if c.not_valid_after_utc <= now]
    if expired:
        which = "the certificate" if expired[0] is leaf else "an intermediate"
        return fail(
            f"{label}: {which} expired on {_when(expired[0].not_valid_after_utc)} ({cert_path})",
            "renew it (bastion certs renew for ACME certificates) and replace the file",
        )
    if leaf.not_valid_before_utc > now:
        return fail(
            f"{label}: not valid before {_when(leaf.not_valid_before_utc)}: the clock is behind?",
            "check the clock (timedatectl)",
        )
    left = leaf.not_valid_after_utc - now
    if left < SOON:
        return warn(
            f"{label}: expires in {left.days} days, {_when(leaf.not_valid_after_utc)}",
            "renew it now: bastion renews ACME certificates a third before expiry, so this "
            "one's renewal is failing (bastion certs list shows the last error)",
        )
    return passed(f"{label}: valid until {_when(leaf.not_valid_after_utc)}, chain complete")


def _configured(ctx: DoctorContext) -> Iterator[tuple[str, TlsFiles]]:
    for index, site in enumerate(ctx.config.sites):
        if isinstance(site.tls, TlsFiles):
            yield f"sites[{index}].tls ({', '.join(site.hosts)})", site.tls
    if ctx.config.admin.tls is not None:
        yield "admin.tls", ctx.config.admin.tls


def check_certificates(ctx: DoctorContext) -> Iterator[Finding]:
    now = ctx.now()
    checked = 0
    for label, files in _configured(ctx):
        checked += 1
        yield judge_pair(Path(files.cert), Path(files.key), label, now)
    store = FileCertStore(ctx.data_dir, ctx.config.acme.directory)
    if store.cert_root.is_dir():
        for cert in sorted(store.cert_root.glob("*/cert.pem")):
            checked += 1
            label = f"ACME {cert.parent.name}"
            yield judge_pair(cert, cert.with_name("key.pem"), label, now)
    root = ctx.data_dir / "ca" / "root.crt"
    if root.is_file():
        checked += 1
        leaves = len(list((ctx.data_dir / "certs" / "local").glob("*.crt")))
        finding = judge_pair(root, None, "local CA root", now)
        note = f" ({leaves} local-CA leaves: bastion re-issues them itself)" if leaves else ""
        yield type(finding)(finding.status, finding.found + note, finding.fix)
    if not checked:
        yield skip("no certificate on disk yet (none configured, none issued)")
