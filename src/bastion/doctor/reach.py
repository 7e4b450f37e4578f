"""Can the CA reach this machine for the challenge? A self-probe through each name's DNS
addresses: with bastion stopped, a short-lived listener on the challenge port answers a
random token and the doctor fetches it through the resolved address; with bastion running,
the gateway itself is asked (its answer to an unknown token shows it is the one reached)."""

from __future__ import annotations

import contextlib
import secrets
import ssl
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from bastion.acme.settings import default_challenges
from bastion.doctor.dns_checks import acme_names
from bastion.doctor.lookup import addresses, per_name
from bastion.doctor.probe import (
    CHALLENGE_PATH,
    connect,
    greeting,
    http_answer,
    http_get_raw,
    probe_listener,
    read_greeting,
)
from bastion.doctor.result import Finding, fail, passed, skip, warn

if TYPE_CHECKING:
    from bastion.config import Address
    from bastion.doctor.context import DoctorContext
    from bastion.doctor.procfs import IPAddress

__all__ = ["check_reach"]

Probe = Callable[[str, "IPAddress"], Finding]

# a probe to one's own interface address does not cross a firewall in front of the machine
_LOCAL_CAVEAT = (
    " (tested from this machine: a firewall in front, like a cloud security group, is not crossed)"
)


def _from_outside(name: str, port: int) -> str:
    scheme = "http" if port != 443 else "https"
    return f"test from another network: curl -kv {scheme}://{name}:{port}/.well-known/acme-challenge/test"


def _host(ip: IPAddress) -> str:
    return f"[{ip}]" if ip.version == 6 else str(ip)


def _unreachable(ctx: DoctorContext, name: str, ip: IPAddress, port: int, exc: OSError) -> Finding:
    where = f"{name} → {_host(ip)}:{port}"
    if ip in ctx.local_addresses:
        return fail(
            f"{where}: {exc} although {ip} is this machine's address",
            f"open port {port} in the local firewall (ufw allow {port}/tcp, nftables)",
        )
    return warn(
        f"{where}: unknown: {exc}. {ip} is not on an interface here (NAT): connecting to "
        "one's own public address from inside often fails (no hairpin NAT)",
        _from_outside(name, port),
    )


def _http_probe(ctx: DoctorContext, port: int, token: str, running: bool) -> Probe:
    def probe(name: str, ip: IPAddress) -> Finding:
        where = f"{name} → {_host(ip)}:{port}"
        try:
            reply = http_get_raw(str(ip), port, name, CHALLENGE_PATH + token, ctx.timeout)
        except OSError as exc:
            return _unreachable(ctx, name, ip, port, exc)
        local = ip in ctx.local_addresses
        caveat = _LOCAL_CAVEAT if local else ""
        if running:
            if token in reply.headers.get("location", ""):
                return passed(f"{where}: the running bastion answered (a redirect){caveat}")
        elif reply.status == 200 and reply.body.strip() == token.encode():
            return passed(f"{where}: the self-probe's token came back{caveat}")
        server = reply.headers.get("server", "no Server header")
        return fail(
            f"{where}: another server answers ({reply.status or 'not HTTP'}, {server}), "
            "not this machine's probe",
            "point the name's DNS at this machine, or stop whatever answers there (another "
            "web server, a port forward to another host)",
        )

    return probe


def _tls_probe(ctx: DoctorContext, port: int, token: str, running: bool) -> Probe:
    def probe(name: str, ip: IPAddress) -> Finding:
        where = f"{name} → {_host(ip)}:{port}"
        try:
            if running:
                context = ssl.create_default_context()
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
                # an alert is an answer too: a TLS server is there
                with connect(str(ip), port, ctx.timeout) as raw, contextlib.suppress(ssl.SSLError):
                    context.wrap_socket(raw, server_hostname=name).close()
                return passed(f"{where}: a TLS server answered (presumably the running bastion)")
            got = read_greeting(str(ip), port, ctx.timeout, len(token))
        except OSError as exc:
            return _unreachable(ctx, name, ip, port, exc)
        if got == token.encode():
            return passed(f"{where}: the self-probe's token came back")
        return fail(
            f"{where}: another server answers there, not this machine's probe",
            "point the name's DNS at this machine, or stop whatever answers on that port",
        )

    return probe


Target = tuple[str, "IPAddress"]


def _targets(ctx: DoctorContext, names: list[str]) -> tuple[list[Target], list[Finding]]:
    """Each (name, address) to probe, and a SKIP for each name without an address."""
    pairs: list[Target] = []
    findings: list[Finding] = []
    for name in names:
        found, errors = addresses(ctx, name)
        if not found:
            why = "; ".join(errors) or "no A/AAAA record"
            findings.append(skip(f"{name}: no address to probe ({why})"))
        pairs += [(name, ip) for ip in found]
    return pairs, findings


def check_reach(ctx: DoctorContext) -> Iterator[Finding]:
    names = [n for n in acme_names(ctx) if not n.startswith("*.")]
    if not names:
        yield skip("no ACME name validated over the network (none, or wildcards only)")
        return
    config = ctx.config
    challenges = [c for c in default_challenges(config) if c != "dns-01"]
    kind = next((c for c in challenges if (config.listen.http if c == "http-01"
                                           else config.listen.https)), None)  # fmt: skip
    if kind is None:
        yield skip("dns-01 only: the CA does not connect to this machine")
        return
    port = ctx.challenge_ports[kind]
    candidates = config.listen.http if kind == "http-01" else config.listen.https
    listen: Address = next((a for a in candidates if a.port == port), candidates[0])
    if listen.port != port:
        yield warn(
            f"{kind}: the CA connects to port {port}, bastion listens on {listen}: this works "
            f"only if something forwards {port} to {listen.port}",
            f"listen on :{port}, or forward port {port} to {listen.port}",
        )
    token = secrets.token_urlsafe(24)
    running = ctx.running_bastion is not None
    factory = _http_probe if kind == "http-01" else _tls_probe
    probe = factory(ctx, port, token, running)
    pairs, findings = _targets(ctx, names)
    yield from findings
    if not pairs:
        return
    if running:
        yield from per_name(pairs, lambda pair: probe(*pair))
        return
    serve = http_answer(token) if kind == "http-01" else greeting(token)
    try:
        with probe_listener(listen, serve, ctx.timeout, ctx.own_sockets.add):
            findings = per_name(pairs, lambda pair: probe(*pair))
    except OSError as exc:
        yield warn(
            f"{kind}: cannot open a probe listener on {listen} ({exc}): reachability not "
            "tested (see the bind check)",
            "run the doctor as the user bastion runs as (or root), with bastion stopped",
        )
        return
    yield from findings
