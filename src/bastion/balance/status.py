"""Pool status for `bastion status`: each worker publishes, the command merges.

Every worker puts a snapshot of its pools once a second (off the hot path: a timer, not a
request) into the state backends' snapshots (``bastion.state.snapshots``: on a single
machine ``<data_dir>/status/worker-<pid>.json``, the owner's only). `bastion status` reads
the snapshots of the running instance's live workers and merges them: counters add up, an
endpoint is shown unhealthy or ejected in as many workers as say so (balancing state is
per worker). A worker withdraws its snapshot when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bastion.balance.balancer import Balancer
    from bastion.state.snapshots import Snapshots

TOPIC = "status"
INTERVAL = 1.0
# how often a worker drops the snapshots of dead workers (in intervals)
SWEEP_EVERY = 30
# set by `bastion run` to its own pid, so that all workers of one instance say so
INSTANCE_ENV = "BASTION_INSTANCE"


def snapshot(balancers: Iterable[Balancer], now: float, instance: int) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "instance": instance,
        "written": time.time(),
        "pools": [b.snapshot(now) for b in balancers],
    }


async def publish(
    balancers: Callable[[], list[Balancer]], snapshots: Snapshots, instance: int
) -> None:
    """Put this worker's snapshot every second until cancelled; then withdraw it."""
    loop = asyncio.get_running_loop()
    ticks = 0
    try:
        while True:
            if ticks % SWEEP_EVERY == 0:  # whether or not this worker has pools
                snapshots.forget_gone(TOPIC)
            ticks += 1
            pools = balancers()
            if pools:
                # a status snapshot is a convenience: never a reason to stop serving
                with contextlib.suppress(OSError):
                    snapshots.put(TOPIC, snapshot(pools, loop.time(), instance))
            await asyncio.sleep(INTERVAL)
    finally:
        with contextlib.suppress(OSError):
            snapshots.remove(TOPIC)


def read(snapshots: Snapshots, instance: int | None) -> list[dict[str, Any]]:
    """The snapshots of live workers (of one instance, when its pid is known)."""
    found = []
    for data in snapshots.read(TOPIC):
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


# what one endpoint's entry says of the endpoint itself, the same under every route using it
_ENDPOINT_FIGURES = ("workers", "health", "in_flight", "requests", "ejections", "ewma_ms")
# what a route says of one of its endpoints (its own upstreams entry)
_MEMBER_FIELDS = ("weight", "zone", "backup")


def group(per_route: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-route pools (as `merge` and the admin API give them) regrouped for `bastion
    status`: each set of endpoints once, with its counters, and the routes that use it.

    Counters belong to an endpoint, which every route naming the same upstream shares: shown
    under each route they would look like per-route figures and add up to too much. What
    is a route's own, its policy and its weights, zones and backups, goes with the route.
    Two endpoints of one URL (routes with other connection settings get their own) are told
    apart by their figures."""
    endpoints: list[dict[str, Any]] = []

    def endpoint_index(ep: dict[str, Any]) -> int:
        own = {k: v for k, v in ep.items() if k not in _MEMBER_FIELDS}
        figures = tuple(own.get(k) for k in _ENDPOINT_FIGURES)
        for index, known in enumerate(endpoints):
            if known["url"] == ep["url"] and tuple(known.get(k) for k in _ENDPOINT_FIGURES) == (
                figures
            ):
                return index
        endpoints.append(own)
        return len(endpoints) - 1

    pools: dict[tuple[int, ...], dict[str, Any]] = {}
    routes = []
    for route in per_route:
        members = route["endpoints"]
        key = tuple(endpoint_index(ep) for ep in members)
        pool = pools.get(key)
        if pool is None:
            pool = pools[key] = {
                "pool": len(pools) + 1,
                "endpoints": [endpoints[i] for i in key],
                "routes": [],
            }
        pool["routes"].append(route["name"])
        routes.append(
            {
                "route": route["name"],
                "pool": pool["pool"],
                "policy": route["policy"],
                "endpoints": [
                    {"url": ep["url"], **{k: ep.get(k) for k in _MEMBER_FIELDS}} for ep in members
                ],
            }
        )
    return {"pools": list(pools.values()), "routes": routes}


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _member(ep: dict[str, Any]) -> str:
    text = ep["url"]
    if ep.get("weight", 1) != 1:
        text += f" weight {ep['weight']}"
    if ep.get("zone"):
        text += f" zone {ep['zone']}"
    if ep.get("backup"):
        text += " (backup)"
    return text


def render(grouped: dict[str, Any]) -> str:
    """`group`'s answer as text: each pool with its endpoints' figures, then the routes."""
    lines: list[str] = []
    for pool in grouped["pools"]:
        lines.append(f"pool {pool['pool']}: used by {', '.join(pool['routes'])}")
        rows: list[tuple[str, ...]] = [
            ("endpoint", "health", "ewma", "in-flight", "requests", "ejections")
        ]
        for ep in pool["endpoints"]:
            rows.append(
                (
                    ep["url"],
                    ep["health"],
                    f"{ep['ewma_ms']:.1f}ms",
                    str(ep["in_flight"]),
                    str(ep["requests"]),
                    str(ep["ejections"]),
                )
            )
        lines += _table(rows)
    lines.append("routes (the figures above are each endpoint's, over every route using it)")
    route_rows: list[tuple[str, ...]] = [("route", "pool", "policy", "endpoints")]
    for route in grouped["routes"]:
        members = ", ".join(_member(ep) for ep in route["endpoints"])
        route_rows.append((route["route"], str(route["pool"]), route["policy"], members))
    lines += _table(route_rows)
    return "\n".join(lines)
