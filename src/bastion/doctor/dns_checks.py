"""DNS as the CA will see it: each ACME name's A and AAAA records against this machine's
addresses, and the CAA records that say which CA may issue for it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from bastion.config.matching import is_private_acme
from bastion.doctor.facts import acme_name_sets, ca_identity
from bastion.doctor.lookup import NXDOMAIN, TIMEOUT, addresses, lookup, per_name
from bastion.doctor.result import Finding, fail, passed, skip, warn

if TYPE_CHECKING:
    from bastion.doctor.context import DoctorContext
    from bastion.doctor.procfs import IPAddress

__all__ = ["acme_names", "check_caa", "check_dns"]

_NO_ACME = "no site gets its certificate through ACME (tls: auto with a public name)"


def acme_names(ctx: DoctorContext) -> list[str]:
    return list(dict.fromkeys(n for names in acme_name_sets(ctx.config) for n in names))


def _dns_for(ctx: DoctorContext, name: str) -> list[Finding]:
    if name.startswith("*."):
        return [
            passed(
                f"{name}: a wildcard, validated with dns-01 through acme.dns_hook (TXT "
                f"_acme-challenge.{name[2:]}); its A/AAAA records are not checked"
            )
        ]
    found, errors = addresses(ctx, name)
    if not found:
        if errors:
            status = warn if all(TIMEOUT in e for e in errors) else fail
            return [
                status(
                    f"{name}: the lookup failed: {'; '.join(errors)}",
                    "check the name's "
                    "DNS servers (dig A " + name + "); the CA's lookup would fail too",
                )
            ]
        missing = lookup(ctx, name, "A").error == NXDOMAIN
        return [
            fail(
                f"{name}: {'no such name (NXDOMAIN)' if missing else 'no A or AAAA record'}",
                f"add an A record (and an AAAA for IPv6) for {name} pointing at this machine's "
                "public address",
            )
        ]
    public_ca = not is_private_acme(ctx.config.acme.directory)
    here = ctx.local_addresses
    mine = {v: sorted(str(a) for a in here if a.version == v and a.is_global) for v in (4, 6)}
    problems: list[Finding] = []
    for address in found:
        record = "A" if address.version == 4 else "AAAA"
        if public_ca and not address.is_global:
            problems.append(
                fail(
                    f"{name}: {record} {address} is a private or loopback address the CA "
                    "cannot reach",
                    f"point the {record} record at this machine's public address",
                )
            )
        elif address in here or address.is_loopback:
            continue
        elif mine[address.version]:
            problems.append(_elsewhere(name, record, address, mine[address.version]))
        elif address.version == 6:
            problems.append(
                fail(
                    f"{name}: AAAA {address}, but this machine has no public IPv6 address; "
                    "Let's Encrypt tries IPv6 first and fails there unless something forwards "
                    "that address here",
                    f"delete the AAAA record of {name} (or give this machine {address})",
                )
            )
        else:
            problems.append(
                warn(
                    f"{name}: A {address} is not on an interface of this machine (only "
                    "private IPv4 addresses here: behind NAT, as cloud VMs are?): this "
                    "machine's public address is unknown (no outside service is asked); the "
                    "reachability check tells whether it leads here"
                )
            )
    if problems:
        return problems
    shown = ", ".join(str(a) for a in found)
    return [passed(f"{name}: {shown}: addresses of this machine")]


def _elsewhere(name: str, record: str, address: IPAddress, mine: list[str]) -> Finding:
    return fail(
        f"{name}: {record} {address} is not an address of this machine ({', '.join(mine)}); "
        "a stale record sends the CA elsewhere"
        + (" (IPv6 is tried first)" if record == "AAAA" else ""),
        f"change the {record} record of {name} to {mine[0]}, or delete it (unless a load "
        "balancer or NAT forwards it here)",
    )


def check_dns(ctx: DoctorContext) -> Iterator[Finding]:
    names = acme_names(ctx)
    if not names:
        yield skip(_NO_ACME)
        return
    for findings in per_name(names, lambda n: _dns_for(ctx, n)):
        yield from findings


# ------------------------------------------------------------------------------- CAA

_KNOWN_TAGS = {"issue", "issuewild", "iodef", "issuemail", "issuevmc", "contactemail",
               "contactphone"}  # fmt: skip


def _caa_set(ctx: DoctorContext, name: str) -> tuple[str, list[tuple[int, str, str]], str]:
    """The relevant CAA set (RFC 8659: the first non-empty one from the name up the tree),
    as (owner, [(flags, tag, value)], error)."""
    labels = name.removeprefix("*.").split(".")
    for start in range(len(labels)):
        owner = ".".join(labels[start:])
        answer = lookup(ctx, owner, "CAA")
        if answer.failed:
            return owner, [], answer.error
        records = [
            (r.flags, r.tag.decode(errors="replace").lower(), r.value.decode(errors="replace"))
            for r in answer.records
        ]
        if records:
            return owner, records, ""
    return "", [], ""


def _caa_for(ctx: DoctorContext, name: str, identity: str | None, host: str) -> Finding:
    owner, records, error = _caa_set(ctx, name)
    if error:
        if error == TIMEOUT:
            return warn(f"{name}: CAA lookup of {owner}: {error}: unknown")
        return fail(
            f"{name}: CAA lookup of {owner} fails: {error}; the CA refuses to issue when it "
            "cannot read CAA",
            f"fix the DNS servers of {owner} (dig CAA {owner} must answer, even if empty)",
        )
    if not records:
        return passed(f"{name}: no CAA record up to the top-level domain: any CA may issue")
    shown = "; ".join(f'{f} {t} "{v}"' for f, t, v in records)
    critical = [t for f, t, _ in records if f & 128 and t not in _KNOWN_TAGS]
    if critical:
        return fail(
            f"{name}: CAA at {owner} has a critical unknown property ({critical[0]}): every "
            "CA must refuse",
            f"remove it or clear its critical flag (128) at {owner}",
        )
    wildcard = name.startswith("*.")
    tag = "issuewild" if wildcard and any(t == "issuewild" for _, t, _ in records) else "issue"
    values = [v for _, t, v in records if t == tag]
    if not values:
        return passed(f"{name}: CAA at {owner} ({shown}) does not restrict issuance")
    if identity is None:
        return warn(
            f"{name}: CAA at {owner} ({shown}): cannot tell whether the CA at {host} is "
            "allowed (its CAA domain is unknown to bastion)",
            f"check that the CA's domain is in an {tag} record at {owner}",
        )
    allowed = {v.split(";")[0].strip().lower() for v in values}
    if identity in allowed:
        return passed(f"{name}: CAA at {owner} allows {identity}")
    hint = ""
    if any(c in v for v in values for c in "'\" ") and identity in " ".join(values).lower():
        hint = " (a value in quotes or with spaces does not count: write the bare domain)"
    return fail(
        f"{name}: CAA at {owner} ({shown}) does not allow {identity}: the CA will refuse "
        f"with 'CAA record for {name} prevents issuance'{hint}",
        f'add the record {owner}. CAA 0 {tag} "{identity}" (keep the CAs you also use)',
    )


def check_caa(ctx: DoctorContext) -> Iterator[Finding]:
    names = acme_names(ctx)
    if not names:
        yield skip(_NO_ACME)
        return
    directory = ctx.config.acme.directory
    identity = ca_identity(directory)
    host = urlsplit(directory).hostname or directory
    yield from per_name(names, lambda n: _caa_for(ctx, n, identity, host))
