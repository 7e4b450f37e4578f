"""Pool status for `bastion status`: each worker publishes, the command merges.

There is no admin API yet, so every worker writes a JSON snapshot of its pools
once a second (off the hot path: a timer, not a request) to
``<data_dir>/status/worker-<pid>.json`` with an atomic rename. `bastion status`
reads the snapshots of the running instance's live workers and merges them:
counters add up, an endpoint is shown unhealthy or ejected in as many workers as
say so (balancing state is per worker).

The files name backends and their health: they are the owner's only (0600, in a 0700
directory). A worker removes its file when it stops; the file of a worker that died
without stopping (killed, crashed) is removed by the next worker that starts and by
`bastion status`: a file whose pid is gone, or that nobody rewrote for `STALE` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bastion.balance.balancer import Balancer

INTERVAL = 1.0
# a live worker rewrites its file every INTERVAL: one this old belongs to nobody (its pid
# may since have been given to another process)
STALE = 30.0
# how often a worker looks for the files of dead workers (in INTERVALs)
_SWEEP_EVERY = 30
# set by `bastion run` to its own pid, so that all workers of one instance say so
INSTANCE_ENV = "BASTION_INSTANCE"


def status_dir(data_dir: Path) -> Path:
    return data_dir / "status"


def snapshot(balancers: Iterable[Balancer], now: float, instance: int) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "instance": instance,
        "written": time.time(),
        "pools": [b.snapshot(now) for b in balancers],
    }


def write(directory: Path, data: dict[str, Any]) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"worker-{os.getpid()}.json"
    tmp = path.with_suffix(".tmp")
    # created 0600 (never readable by others, not even between open and chmod), then
    # renamed over the old one: a reader sees a whole file or the previous one
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an old .tmp left with other bits keeps them through O_CREAT
        os.write(fd, json.dumps(data).encode())
    finally:
        os.close(fd)
    tmp.replace(path)


def sweep(directory: Path) -> None:
    """Remove the files of workers that are gone: their pid is dead, or they are STALE."""
    now = time.time()
    try:
        paths = list(directory.glob("worker-*.json")) + list(directory.glob("worker-*.tmp"))
    except OSError:
        return
    for path in paths:
        pid = path.stem.removeprefix("worker-")
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            stale = now - path.stat().st_mtime > STALE
            if stale or not _alive(int(pid)):
                path.unlink()
        except OSError:
            continue  # removed meanwhile, or not ours to remove


async def publish(balancers: Callable[[], list[Balancer]], directory: Path, instance: int) -> None:
    """Write this worker's snapshot every second until cancelled; then remove it."""
    loop = asyncio.get_running_loop()
    ticks = 0
    try:
        while True:
            if ticks % _SWEEP_EVERY == 0:
                sweep(directory)
            ticks += 1
            pools = balancers()
            if pools:
                # a status file is a convenience: never a reason to stop serving
                with contextlib.suppress(OSError):
                    write(directory, snapshot(pools, loop.time(), instance))
            await asyncio.sleep(INTERVAL)
    finally:
        with contextlib.suppress(OSError):
            (directory / f"worker-{os.getpid()}.json").unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read(directory: Path, instance: int | None) -> list[dict[str, Any]]:
    """The snapshots of live workers (of one instance, when its pid is known); the files
    of dead ones are removed on the way."""
    sweep(directory)
    found = []
    for path in sorted(directory.glob("worker-*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or not _alive(int(data.get("pid", 0))):
            continue
        if instance is not None and data.get("instance") != instance:
            continue
        found.append(data)
    return found


def merge(snapshots: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pools: dict[str, dict[str, Any]] = {}
    for snap in snapshots:
        for pool in snap["pools"]:
            merged = pools.setdefault(
                pool["name"], {"name": pool["name"], "policy": pool["policy"], "endpoints": {}}
            )
            for ep in pool["endpoints"]:
                into = merged["endpoints"].setdefault(
                    ep["url"],
                    {
                        "url": ep["url"],
                        "zone": ep["zone"],
                        "weight": ep["weight"],
                        "backup": ep["backup"],
                        "workers": 0,
                        "unhealthy_in": 0,
                        "ejected_in": 0,
                        "in_flight": 0,
                        "requests": 0,
                        "ejections": 0,
                        "ewma_ms": [],
                    },
                )
                into["workers"] += 1
                into["unhealthy_in"] += 0 if ep["healthy"] else 1
                into["ejected_in"] += 1 if ep["ejected"] else 0
                into["in_flight"] += ep["in_flight"]
                into["requests"] += ep["requests"]
                into["ejections"] += ep["ejections"]
                into["ewma_ms"].append(ep["ewma_ms"])
    result = []
    for pool in pools.values():
        endpoints = []
        for ep in pool["endpoints"].values():
            samples = ep.pop("ewma_ms")
            ep["ewma_ms"] = round(sum(samples) / len(samples), 2)
            ep["health"] = _health(ep)
            endpoints.append(ep)
        result.append({**pool, "endpoints": endpoints})
    return result


def _health(ep: dict[str, Any]) -> str:
    workers = ep["workers"]
    if ep["unhealthy_in"]:
        return "unhealthy" + (f" ({ep['unhealthy_in']}/{workers} workers)" if workers > 1 else "")
    if ep["ejected_in"]:
        return "ejected" + (f" ({ep['ejected_in']}/{workers} workers)" if workers > 1 else "")
    return "healthy"


def render(pools: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    for pool in pools:
        lines.append(f"pool {pool['name']} ({pool['policy']})")
        rows = [("endpoint", "zone", "health", "ewma", "in-flight", "requests", "ejections")]
        for ep in pool["endpoints"]:
            url = ep["url"] + (" (backup)" if ep["backup"] else "")
            if ep["weight"] != 1:
                url += f" weight {ep['weight']}"
            rows.append(
                (
                    url,
                    ep["zone"] or "-",
                    ep["health"],
                    f"{ep['ewma_ms']:.1f}ms",
                    str(ep["in_flight"]),
                    str(ep["requests"]),
                    str(ep["ejections"]),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            lines.append(
                "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            )
    return "\n".join(lines)
