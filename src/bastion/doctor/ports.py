"""Sockets: can bastion bind its listeners, are its backends hidden behind it, are the
admin and metrics listeners private."""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import bastion.doctor.procfs as procfs
from bastion.config.addresses import is_local
from bastion.doctor.facts import listeners
from bastion.doctor.result import Finding, fail, passed, skip, warn

if TYPE_CHECKING:
    from bastion.config import Address
    from bastion.doctor.context import DoctorContext

__all__ = ["check_backends", "check_binding", "check_private_listeners"]


def _ip(host: str | None) -> procfs.IPAddress | None:
    try:
        return ipaddress.ip_address(host) if host else None
    except ValueError:
        return None


def _overlaps(sock: procfs.Socket, address: Address) -> bool:
    """Would binding ``address`` collide with ``sock`` (same port assumed)?"""
    if address.host is None or sock.wildcard:
        return True
    if address.host == "localhost":
        return sock.address.is_loopback
    return sock.address == _ip(address.host)


def _others(ctx: DoctorContext, sockets: list[procfs.Socket]) -> list[procfs.Socket]:
    """Leave out the doctor's own listener (the reachability probe listens meanwhile)."""
    return [s for s in sockets if s.inode not in ctx.own_sockets]


def _owner_text(ctx: DoctorContext, sockets: list[procfs.Socket]) -> tuple[str, bool]:
    """Who holds these sockets, and whether it is bastion."""
    owners = procfs.socket_owners(ctx.proc, {s.inode for s in sockets})
    for pid in owners.values():
        command = procfs.process_name(ctx.proc, pid)
        return f"pid {pid} ({command[:60] or '?'})", "bastion" in command
    if ctx.running_bastion is not None:
        # the owner is not visible to this user, but a bastion of ours is running
        return f"presumably the running bastion (pid {ctx.running_bastion})", True
    return "another process (run as root to see which: ss -ltnp)", False


def _low_port_allowed(ctx: DoctorContext) -> str | None:
    """Why this user may bind ports below the unprivileged start, or None."""
    if ctx.euid == 0:
        return "running as root"
    caps = procfs.capabilities(ctx.proc)
    if caps is not None and (caps[0] | caps[1]) >> procfs.CAP_NET_BIND_SERVICE & 1:
        return "CAP_NET_BIND_SERVICE is in this process's capabilities"
    unit = ctx.unit
    if unit is not None and unit.may_bind_low_ports():
        return f"the systemd unit {ctx.unit_path} grants it"
    return None


def check_binding(ctx: DoctorContext) -> Iterator[Finding]:
    start = procfs.unprivileged_port_start(ctx.proc)
    allowed = _low_port_allowed(ctx)
    sockets = procfs.listening(ctx.proc)
    for listener in listeners(ctx.config):
        address, what = listener.address, f"{listener.key} {listener.address}"
        ip = _ip(address.host)
        if ip is not None and not ip.is_loopback and ip not in ctx.local_addresses:
            yield fail(
                f"{what}: {ip} is not an address of this machine (bind would fail)",
                f"listen on an address of this machine, or on :{address.port} (every one)",
            )
            continue
        if address.port < start and allowed is None:
            yield fail(
                f"{what}: port {address.port} is privileged (below "
                f"net.ipv4.ip_unprivileged_port_start={start}) and uid {ctx.euid} has no "
                "CAP_NET_BIND_SERVICE",
                "run bastion as a systemd service with AmbientCapabilities="
                "CAP_NET_BIND_SERVICE (bastion service install writes one), or grant the "
                "interpreter the capability: sudo setcap cap_net_bind_service=+ep "
                f"$(readlink -f {sys.executable}), or lower the limit: sudo sysctl -w "
                f"net.ipv4.ip_unprivileged_port_start={address.port}",
            )
            continue
        why = f" ({allowed})" if address.port < start else ""
        if sockets is None:
            yield warn(f"{what}: bindable{why}; /proc/net/tcp unreadable: in use or not, unknown")
            continue
        taken = [s for s in sockets if s.port == address.port and _overlaps(s, address)]
        taken = _others(ctx, taken) if taken else taken
        if not taken:
            yield passed(f"{what}: free and bindable{why}")
            continue
        owner, is_bastion = _owner_text(ctx, taken)
        if is_bastion:
            yield passed(f"{what}: held by {owner}")
        else:
            yield fail(
                f"{what}: already in use ({', '.join(map(str, taken))}) by {owner}",
                f"stop that server (sudo ss -ltnp 'sport = :{address.port}' names it) or "
                f"change {listener.key}",
            )


def _docker_note(ctx: DoctorContext, sockets: list[procfs.Socket]) -> str:
    owners = procfs.socket_owners(ctx.proc, {s.inode for s in sockets})
    if any("docker-proxy" in procfs.process_name(ctx.proc, pid) for pid in owners.values()):
        return " (held by docker-proxy: a Docker-published port)"
    return ""


def check_backends(ctx: DoctorContext) -> Iterator[Finding]:
    """An upstream on this machine that listens on every interface can be reached around
    the gateway, skipping its authentication and limits."""
    seen: dict[tuple[str, int], str] = {}
    for s_index, site in enumerate(ctx.config.sites):
        for r_index, route in enumerate(site.routes):
            for endpoint in route.proxy.upstreams if route.proxy else []:
                url = endpoint.url
                if url.host is None or url.port is None:
                    continue  # a Unix socket: not reachable from the network
                seen.setdefault((url.host, url.port), f"sites[{s_index}].routes[{r_index}]")
    if not seen:
        yield skip("no proxy route with a TCP upstream")
        return
    sockets = procfs.listening(ctx.proc)
    if sockets is None:
        yield warn("/proc/net/tcp is unreadable: cannot tell how the backends listen")
        return
    for (host, port), where in seen.items():
        ip = _ip(host)
        local = host == "localhost" or (
            ip is not None and (ip.is_loopback or ip in ctx.local_addresses)
        )
        if not local:
            yield passed(f"{host}:{port} ({where}) is on another machine: not checked here")
            continue
        on_port = [s for s in sockets if s.port == port]
        on_port = _others(ctx, on_port) if on_port else on_port
        if not on_port:
            yield warn(
                f"{host}:{port} ({where}): nothing listens on port {port}",
                "start the backend (until then the route answers 502)",
            )
            continue
        public = [s for s in on_port if s.wildcard or not s.address.is_loopback]
        if not public:
            yield passed(f"{host}:{port} ({where}) listens on loopback only")
            continue
        yield warn(
            f"the backend {host}:{port} ({where}) listens on "
            f"{', '.join(map(str, public))}{_docker_note(ctx, public)}: it is reachable from "
            "other machines around the gateway (no auth, no limits)",
            f"bind it to 127.0.0.1:{port} (its --host/--bind option); if it is a "
            f"Docker-published port, publish it as 127.0.0.1:{port}:{port} "
            f"(-p 127.0.0.1:{port}:{port}); or firewall port {port}",
        )


def _wide(networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    return any(n.prefixlen == 0 for n in networks)


def check_private_listeners(ctx: DoctorContext) -> Iterator[Finding]:
    admin, metrics = ctx.config.admin, ctx.config.metrics
    if admin.listen is None and metrics.listen is None:
        yield skip("no admin or metrics listener configured")
        return
    if admin.listen is not None:
        where = f"admin.listen {admin.listen}"
        if is_local(admin.listen):
            yield passed(f"{where}: only this machine can connect")
        elif _wide(admin.allow):
            yield warn(
                f"{where}: TLS and a token, but admin.allow lets any address try the token",
                "narrow admin.allow to the operators' networks, or listen on 127.0.0.1 "
                "and reach it through an SSH tunnel",
            )
        else:
            allow = ", ".join(map(str, admin.allow))
            yield passed(f"{where}: TLS, a token, clients from {allow} only")
    if metrics.listen is not None:
        where = f"metrics.listen {metrics.listen}"
        ip = _ip(metrics.listen.host)
        if is_local(metrics.listen):
            yield passed(f"{where}: only this machine can connect")
        elif _wide(metrics.allow):
            yield fail(
                f"{where}: no TLS, no token, and metrics.allow admits every address: route "
                "names, consumers and traffic figures are public",
                "listen on 127.0.0.1 or an internal address, and set metrics.allow to the "
                "Prometheus server's address",
            )
        elif ip is not None and ip.is_private:
            yield passed(f"{where}: an internal address, scrapers limited by metrics.allow")
        else:
            yield warn(
                f"{where}: reachable from other networks without TLS or a token; only "
                f"metrics.allow ({', '.join(map(str, metrics.allow))}) refuses others (403)",
                "listen on 127.0.0.1 or an internal address rather than every interface",
            )
