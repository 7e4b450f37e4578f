"""DNS queries with the context's resolver and short timeouts, each asked once per run (the
DNS, CAA and reachability checks share the answers), and a helper to run one function per
name in parallel."""

from __future__ import annotations

import concurrent.futures
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from bastion.doctor.context import DoctorContext
    from bastion.doctor.procfs import IPAddress

__all__ = ["Answer", "addresses", "lookup", "per_name"]

T = TypeVar("T")
K = TypeVar("K")
NXDOMAIN = "NXDOMAIN (no such name)"
TIMEOUT = "no answer (timeout)"


@dataclass(frozen=True)
class Answer:
    records: tuple[Any, ...]  # dnspython rdata objects
    error: str = ""  # why there is no answer: NXDOMAIN, SERVFAIL, timeout...

    @property
    def failed(self) -> bool:
        """The lookup itself failed (not an empty answer, not a missing name)."""
        return bool(self.error) and self.error != NXDOMAIN


def _query(ctx: DoctorContext, name: str, rdtype: str) -> Answer:
    import dns.exception
    import dns.resolver

    try:
        resolver = ctx.resolver()
    except dns.resolver.NoResolverConfiguration:
        return Answer((), "no DNS resolver configured (/etc/resolv.conf)")
    try:
        answer = resolver.resolve(name, rdtype, search=False, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return Answer((), NXDOMAIN)
    except dns.resolver.NoNameservers:
        return Answer((), "SERVFAIL (the name servers could not answer)")
    except dns.exception.Timeout:
        return Answer((), TIMEOUT)
    except dns.exception.DNSException as exc:
        return Answer((), str(exc) or type(exc).__name__)
    return Answer(tuple(answer.rrset) if answer.rrset is not None else ())


def lookup(ctx: DoctorContext, name: str, rdtype: str) -> Answer:
    return ctx.cached(("dns", name.lower(), rdtype), lambda: _query(ctx, name, rdtype))


def addresses(ctx: DoctorContext, name: str) -> tuple[list[IPAddress], list[str]]:
    """The A and AAAA addresses of ``name``, and the errors of the lookups that failed."""
    found: list[IPAddress] = []
    errors = []
    # both at once: a dead DNS server costs one timeout
    answers = per_name(("A", "AAAA"), lambda rdtype: lookup(ctx, name, rdtype))
    for rdtype, answer in zip(("A", "AAAA"), answers, strict=True):
        if answer.error and answer.error != NXDOMAIN:
            errors.append(f"{rdtype}: {answer.error}")
        found += [ipaddress.ip_address(r.address) for r in answer.records]
    return found, errors


def per_name(items: Iterable[K], run: Callable[[K], T]) -> list[T]:
    """``run`` for each item (a name, a name and an address) at once: each waits on the
    network. Results in order."""
    items = list(items)
    if len(items) <= 1:
        return [run(item) for item in items]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(items), 16)) as pool:
        return list(pool.map(run, items))
