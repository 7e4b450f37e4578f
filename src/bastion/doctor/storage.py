"""The data dir: where it is, whether bastion can write it, whether it survives a reboot,
and whether there is room. Nothing is created: a missing dir is judged by its parent."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import bastion.doctor.procfs as procfs
from bastion.doctor.facts import acme_name_sets
from bastion.doctor.result import Finding, fail, passed, skip, warn

if TYPE_CHECKING:
    from bastion.doctor.context import DoctorContext

__all__ = ["check_data_dir", "check_state"]

# below these, stats and certificates stop being written
FREE_WARN = 200 * 1024 * 1024
FREE_FAIL = 20 * 1024 * 1024
_VOLATILE = ("tmpfs", "ramfs")


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_data_dir(ctx: DoctorContext) -> Iterator[Finding]:
    path, source = ctx.data_dir_and_source
    uses_acme = ctx.loaded is not None and bool(acme_name_sets(ctx.config))
    if path.exists():
        if not path.is_dir():
            yield fail(f"{path} is not a directory", "remove it or point data_dir elsewhere")
            return
        if not os.access(path, os.W_OK | os.X_OK):
            yield fail(
                f"{path} is not writable by uid {ctx.euid}",
                f"sudo chown -R {ctx.euid} {path}, or run bastion as its owner",
            )
            return
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            yield warn(
                f"{path} is mode {mode:o}: it holds private keys, others may list it",
                f"chmod 700 {path}",
            )
        else:
            yield passed(f"{path} ({source}) exists and is writable")
        anchor = path
    else:
        anchor = _existing_ancestor(path.parent)
        if not os.access(anchor, os.W_OK | os.X_OK):
            yield fail(
                f"{path} does not exist and {anchor} is not writable by uid {ctx.euid}",
                f"sudo install -d -m 700 -o {ctx.euid} {path}, or set data_dir",
            )
            return
        yield passed(
            f"{path} ({source}) does not exist yet; bastion creates it (mode 700) at start"
        )
    mount = procfs.mount_of(ctx.proc, anchor.resolve())
    if mount is not None and mount.fstype in _VOLATILE:
        found = f"{path} is on {mount.fstype} ({mount.point}): emptied at every reboot"
        fix = "set data_dir (or --data-dir) to a directory on disk, like /var/lib/bastion"
        if uses_acme:
            yield fail(
                found + ", so every restart orders new certificates and spends the CA's "
                "rate limits",
                fix,
            )
        else:
            yield warn(found + " (the local CA and statistics are lost)", fix)
    if mount is not None and "ro" in mount.options:
        yield fail(f"{mount.point} is mounted read-only", "remount it read-write or move data_dir")
    try:
        usage = os.statvfs(anchor)
    except OSError:
        return
    free = usage.f_bavail * usage.f_frsize
    text = f"{free / 1024 / 1024:.0f} MiB free on the data dir's filesystem"
    if free < FREE_FAIL:
        yield fail(text, "free some space: certificates and statistics cannot be written")
    elif free < FREE_WARN:
        yield warn(text, "free some space (statistics grow with traffic)")


def check_state(ctx: DoctorContext) -> Iterator[Finding]:
    """Shared state (Redis), when the config names one. The config has no such section yet
    (cluster mode comes later): until then this says so."""
    settings = getattr(ctx.config, "state", None)
    url = getattr(settings, "redis", None) if settings is not None else None
    if not url:
        yield skip("no state.redis configured: state lives in this process and the data dir")
        return
    if ctx.offline:
        yield skip("--offline: Redis not contacted")
        return
    yield redis_reachable(str(url), ctx.timeout)


def redis_reachable(url: str, timeout: float) -> Finding:
    """PING the server of a redis:// URL (a reply asking for a password counts: it is up)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port or 6379
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = conn.recv(64)
    except OSError as exc:
        return fail(
            f"Redis at {host}:{port} does not answer: {exc}",
            "start Redis or correct state.redis; without it limits and certificates are not shared",
        )
    if reply.startswith((b"+PONG", b"-NOAUTH", b"-WRONGPASS")):
        return passed(f"Redis at {host}:{port} answers")
    return warn(f"{host}:{port} answered {reply[:20]!r}, not like Redis")
