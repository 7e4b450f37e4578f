"""What the kernel says about this machine, read from /proc (a directory given by the
context, so that tests can hand in fixtures): listening sockets, local addresses,
capabilities, the unprivileged port range, mounts and which process owns a socket."""

from __future__ import annotations

import contextlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CAP_NET_BIND_SERVICE",
    "IPAddress",
    "Mount",
    "Socket",
    "capabilities",
    "listening",
    "local_addresses",
    "mount_of",
    "process_name",
    "socket_owners",
    "unprivileged_port_start",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
CAP_NET_BIND_SERVICE = 10
_LISTEN = "0A"  # TCP_LISTEN in the st column of /proc/net/tcp


@dataclass(frozen=True, slots=True)
class Socket:
    """A listening TCP socket."""

    address: IPAddress
    port: int
    inode: int

    @property
    def wildcard(self) -> bool:
        return self.address.is_unspecified

    def __str__(self) -> str:
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{host}:{self.port}"


def _hex_address(text: str) -> IPAddress:
    """The kernel prints addresses as 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(text)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def listening(proc: Path) -> list[Socket] | None:
    """Listening TCP sockets of this network namespace; None when /proc cannot tell."""
    found: list[Socket] = []
    readable = False
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            host, _, port = fields[1].partition(":")
            try:
                found.append(Socket(_hex_address(host), int(port, 16), int(fields[9])))
            except ValueError:
                continue
    return found if readable else None


def local_addresses(proc: Path) -> set[IPAddress]:
    """The addresses of this machine's interfaces (IPv4 from the routing trie's LOCAL
    entries, IPv6 from if_inet6)."""
    found: set[IPAddress] = set()
    try:
        last = ""
        for line in (proc / "net" / "fib_trie").read_text().splitlines():
            text = line.strip()
            if text.startswith("|--"):
                last = text[3:].strip()
            elif "host LOCAL" in text and last:
                with contextlib.suppress(ValueError):
                    found.add(ipaddress.ip_address(last))
    except OSError:
        pass
    try:
        for line in (proc / "net" / "if_inet6").read_text().splitlines():
            fields = line.split()
            if fields and len(fields[0]) == 32:
                found.add(ipaddress.IPv6Address(bytes.fromhex(fields[0])))
    except (OSError, ValueError):
        pass
    return found


def capabilities(proc: Path) -> tuple[int, int] | None:
    """(effective, ambient) capability sets of this process, None when unreadable."""
    try:
        lines = (proc / "self" / "status").read_text().splitlines()
    except OSError:
        return None
    values = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("CapEff", "CapAmb"):
            try:
                values[key] = int(value.strip(), 16)
            except ValueError:
                return None
    if "CapEff" not in values:
        return None
    return values["CapEff"], values.get("CapAmb", 0)


def unprivileged_port_start(proc: Path) -> int:
    """The lowest port any user may bind (1024 unless the sysctl lowered it)."""
    try:
        return int((proc / "sys/net/ipv4/ip_unprivileged_port_start").read_text().strip())
    except (OSError, ValueError):
        return 1024


@dataclass(frozen=True, slots=True)
class Mount:
    point: str
    fstype: str
    options: tuple[str, ...]


def mount_of(proc: Path, path: Path) -> Mount | None:
    """The mount holding ``path`` (the longest mount point that is a prefix of it)."""
    try:
        lines = (proc / "self" / "mounts").read_text().splitlines()
    except OSError:
        try:
            lines = (proc / "mounts").read_text().splitlines()
        except OSError:
            return None
    best: Mount | None = None
    text = str(path)
    for line in lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        point = fields[1].replace("\\040", " ")
        inside = text == point or text.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best.point)):
            best = Mount(point, fields[2], tuple(fields[3].split(",")))
    return best


def socket_owners(proc: Path, inodes: set[int]) -> dict[int, int]:
    """Which process holds each socket inode (pid), as far as this user may look: the
    descriptors of other users' processes are readable by root only."""
    owners: dict[int, int] = {}
    if not inodes:
        return owners
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    try:
        pids = [entry for entry in os.listdir(proc) if entry.isdigit()]
    except OSError:
        return owners
    for pid in pids:
        try:
            fds = os.listdir(proc / pid / "fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(proc / pid / "fd" / fd)
            except OSError:
                continue
            inode = wanted.get(target)
            if inode is not None:
                owners.setdefault(inode, int(pid))
    return owners


def process_name(proc: Path, pid: int) -> str:
    """The command line of ``pid`` (empty when it is gone or unreadable)."""
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
