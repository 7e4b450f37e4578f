"""The CA's side: how many certificates bastion has had issued this week for the same
names (Let's Encrypt's rate limits), and the clock against the CA's."""

from __future__ import annotations

import datetime as dt
import email.utils
import ipaddress
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cryptography import x509

from bastion.doctor.facts import acme_name_sets, is_letsencrypt_production
from bastion.doctor.lookup import TIMEOUT, addresses
from bastion.doctor.result import Finding, fail, passed, skip, warn
from bastion.state.certs import FileCertStore

if TYPE_CHECKING:
    from bastion.doctor.context import DoctorContext

__all__ = ["check_budget", "check_clock", "issued_certificates", "registered_domain"]

WEEK = dt.timedelta(days=7)
# Let's Encrypt production, per rolling week (letsencrypt.org/docs/rate-limits)
DUPLICATE_LIMIT = 5  # certificates for the exact same set of names
DOMAIN_LIMIT = 50  # certificates per registered domain
CLOCK_WARN = 30.0  # seconds: a clock kept by NTP is within milliseconds
CLOCK_FAIL = 300.0  # the local CA backdates its leaves 5 minutes; beyond that they are "future"

# second-level labels under which registries sell names (example.co.uk): an approximation of
# the public suffix list, which bastion does not ship
_SECOND_LEVEL = {"co", "com", "net", "org", "ac", "gov", "edu", "ne", "or", "go", "gob"}


def registered_domain(name: str) -> str:
    labels = name.lower().removeprefix("*.").split(".")
    keep = 3 if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL else 2
    return ".".join(labels[-keep:])


def issued_certificates(root: Path) -> list[x509.Certificate]:
    """Every leaf certificate kept under ``root`` (the first certificate of each PEM file),
    once each."""
    found: dict[tuple[bytes, int], x509.Certificate] = {}
    if not root.is_dir():
        return []
    for path in sorted(root.rglob("*")):
        if path.suffix not in (".pem", ".crt") or path.name.startswith("key"):
            continue
        try:
            chain = x509.load_pem_x509_certificates(path.read_bytes())
        except (OSError, ValueError):
            continue
        leaf = chain[0]
        found.setdefault((leaf.issuer.public_bytes(), leaf.serial_number), leaf)
    return list(found.values())


def _names(cert: x509.Certificate) -> frozenset[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(n.lower() for n in san.get_values_for_type(x509.DNSName))


def _rate_limited(store: FileCertStore, names: tuple[str, ...]) -> str | None:
    error = store.read_status(names).get("last_error")
    if isinstance(error, str) and ("rateLimited" in error or "too many" in error.lower()):
        return error
    return None


def check_budget(ctx: DoctorContext) -> Iterator[Finding]:
    sets = acme_name_sets(ctx.config)
    if not sets:
        yield skip("no site gets its certificate through ACME")
        return
    directory = ctx.config.acme.directory
    store = FileCertStore(ctx.data_dir, directory)
    since = ctx.now() - WEEK
    recent = [c for c in issued_certificates(store.cert_root) if c.not_valid_before_utc >= since]
    per_set = Counter(_names(c) for c in recent)
    # a certificate counts once for each registered domain among its names
    per_domain = Counter(
        domain for c in recent for domain in {registered_domain(n) for n in _names(c)}
    )
    production = is_letsencrypt_production(directory)
    for names in sets:
        what = ", ".join(names)
        limited = _rate_limited(store, names)
        if limited:
            yield fail(
                f"{what}: the last order was refused for a rate limit: {limited}",
                "wait until the time the CA gave; test with the staging directory meanwhile",
            )
            continue
        count = per_set[frozenset(n.lower() for n in names)]
        domain = registered_domain(names[0])
        in_domain = per_domain[domain]
        found = (
            f"{what}: {count} certificate{'s' * (count != 1)} for these names and {in_domain} "
            f"for {domain} issued in the last 7 days (kept in {store.cert_root})"
        )
        if not production:
            yield passed(found + "; Let's Encrypt production's limits do not apply here")
        elif count >= DUPLICATE_LIMIT or in_domain >= DOMAIN_LIMIT:
            yield fail(
                found + f": Let's Encrypt refuses more (limits: {DUPLICATE_LIMIT} per exact "
                f"set of names, {DOMAIN_LIMIT} per registered domain, per week)",
                "keep the data dir between runs (do not delete certificates), wait for the "
                "oldest to leave the 7-day window, and test with the staging directory",
            )
        elif count >= DUPLICATE_LIMIT - 2 or in_domain >= DOMAIN_LIMIT - 10:
            yield warn(
                found + f": near Let's Encrypt's limits ({DUPLICATE_LIMIT} per set of names, "
                f"{DOMAIN_LIMIT} per domain, per week)",
                "avoid fresh data dirs and forced renewals this week; test with staging",
            )
        else:
            yield passed(found)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_clock(ctx: DoctorContext) -> Iterator[Finding]:
    if not acme_name_sets(ctx.config):
        yield skip("no site gets its certificate through ACME: no CA to compare with")
        return
    acme = ctx.config.acme
    host = urlsplit(acme.directory).hostname or ""
    if host and not _is_ip(host):
        # urllib's own lookup has no timeout: a dead DNS server is found out here instead
        resolved, errors = addresses(ctx, host)
        if not resolved and errors and all(TIMEOUT in e for e in errors):
            yield warn(
                f"the DNS did not answer for {host}, the ACME directory's host: the clock "
                "is not compared (and bastion could not reach the CA either)",
                "check the DNS resolver (/etc/resolv.conf)",
            )
            return
    before = ctx.now()
    try:
        answer = ctx.http_get(acme.directory, ctx.timeout, acme.trusted_roots)
    except OSError as exc:
        yield fail(
            f"cannot reach the ACME directory {acme.directory}: {exc}",
            "allow outgoing HTTPS to the CA (firewall, proxy, DNS), or correct acme.directory",
        )
        return
    after = ctx.now()
    if answer.status != 200 or b"newOrder" not in answer.body:
        yield warn(
            f"{acme.directory} answered {answer.status}, not an ACME directory",
            "check acme.directory (the URL ends in /directory)",
        )
    date = answer.headers.get("date")
    server = email.utils.parsedate_to_datetime(date) if date else None
    if server is None or server.tzinfo is None:
        yield warn(f"{acme.directory} sent no usable Date header: the clock is not compared")
        return
    skew = ((before + (after - before) / 2) - server).total_seconds()
    direction = "ahead of" if skew > 0 else "behind"
    found = f"this machine's clock is {abs(skew):.0f} s {direction} the CA's ({acme.directory})"
    fix = "enable time synchronisation: timedatectl set-ntp true (or chrony / systemd-timesyncd)"
    if abs(skew) > CLOCK_FAIL:
        yield fail(found + ": certificates look not yet valid or expired to one side", fix)
    elif abs(skew) > CLOCK_WARN:
        yield warn(found + ": the clock is not synchronised", fix)
    else:
        yield passed(f"clock within {max(abs(skew), 1):.0f} s of the CA's")
