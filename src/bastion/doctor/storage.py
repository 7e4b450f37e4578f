"""The data dir: where it is, whether bastion can write it, whether it survives a reboot,
and whether there is room. Nothing is created: a missing dir is judged by its parent."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import bastion.doctor.procfs as procfs
from bastion.doctor.facts import acme_name_sets
from bastion.doctor.result import Finding, fail, passed, skip, warn

if TYPE_CHECKING:
    from bastion.config.state_models import State
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
    """Shared state (Redis), when the config names one: reachable with its credentials, a
    version that runs the limit script, and an eviction policy that keeps counters."""
    settings = getattr(ctx.config, "state", None)
    if settings is None or settings.redis is None:
        yield skip("no state.redis configured: state lives in this process and the data dir")
        return
    if ctx.offline:
        yield skip("--offline: Redis not contacted")
        return
    yield from redis_findings(settings, ctx.timeout)


def redis_findings(settings: State, timeout: float) -> Iterator[Finding]:
    """PING through the client the gateway itself would use (URL, Unix socket, Sentinel or
    Cluster, with the configured credentials), then look at what the server says of itself."""
    from redis.exceptions import AuthenticationError, RedisError, ResponseError

    from bastion.config.state_values import redis_target
    from bastion.state.redis_sync import connect_sync

    assert settings.redis is not None
    where = redis_target(settings.redis)  # no credentials
    no_share = "without it, limits fall back per on_store_down and nothing is shared"
    try:
        client = connect_sync(settings, timeout=timeout)
        client.ping()
    except AuthenticationError as exc:
        yield fail(f"Redis at {where} refuses the credentials: {exc}", "correct the password "
                   "(or user) in state.redis; " + no_share)  # fmt: skip
        return
    except (RedisError, OSError) as exc:
        yield fail(f"Redis at {where} does not answer: {exc}",
                   f"start Redis or correct state.redis; {no_share}")  # fmt: skip
        return
    try:
        info = client.info("server")
        version = str(info.get("redis_version", "?"))
    except (RedisError, OSError):
        version = "?"
    major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0
    if 0 < major < 5:
        yield fail(f"Redis at {where} is version {version}",
                   "use Redis 5 or newer: the limit script reads the server's clock")  # fmt: skip
        return
    yield passed(f"Redis at {where} answers (version {version})")
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy", "")
    except (ResponseError, RedisError, OSError):
        return  # CONFIG is often disabled on managed Redis: nothing to say
    if policy.startswith("allkeys-"):
        yield warn(
            f"Redis at {where} evicts any key when full (maxmemory-policy {policy}): limit "
            "counters may vanish and let requests through",
            "use noeviction or a volatile-* policy (bastion's keys expire by themselves)",
        )
