"""The reading side of the cluster view: every instance's minutes of a window, from Redis,
merged into one summary in the shape of `StatsStore.summary`, with a row per instance.

Figures add up: counts are sums over instances, workers and minutes; latency percentiles
come from the summed histogram buckets (never an average of each instance's
percentiles). Top-K tables are the sums of every worker's summary of every minute: each
count is a lower bound, short by at most `top_error` = 2N/(K+1) for the window's N
requests (the Misra-Gries bound of `sketch.py`, summed over the parts: the workers'
5-second summaries and their reduction into a minute's).

Only windows the minutes cover (48 hours in Redis): 5m, 1h, 24h. Longer windows, the
per-second series and the recent 5xx answers stay per instance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from operator import add
from typing import Any, Protocol

from bastion.observe.stats.cluster import decode_row, decode_top
from bastion.observe.stats.percentiles import percentile
from bastion.observe.stats.prune import TOP_KEPT
from bastion.observe.stats.rows import DIMENSIONS
from bastion.observe.stats.schema import FIGURES, LATENCY
from bastion.observe.stats.store import TOP_SHOWN, _series, totals

__all__ = ["CLUSTER_WINDOWS", "ClusterReader", "cluster_summary"]

MINUTE = 60
_AT = {name: i for i, name in enumerate(FIGURES)}
_LATENCY = slice(_AT[LATENCY[0]], _AT[LATENCY[-1]] + 1)


@dataclass(frozen=True)
class ClusterWindow:
    name: str
    span: int
    step: int

    def bounds(self, now: float) -> tuple[int, int, int]:
        """(since, end, until) as `store.Window.bounds`: whole minutes, the minute in
        progress included (its figures so far)."""
        until = int(now)
        end = (until // self.step + 1) * self.step
        return end - self.span, end, until


CLUSTER_WINDOWS = {
    w.name: w
    for w in (
        ClusterWindow("5m", 300, MINUTE),
        ClusterWindow("1h", 3600, MINUTE),
        ClusterWindow("24h", 86400, 900),
    )
}


class ClusterReader(Protocol):
    def instances(self, now: float) -> dict[str, dict[str, float]]: ...

    def read(
        self, instances: list[str], minutes: list[int]
    ) -> dict[tuple[str, int], dict[str, str]]: ...


def missing_after(every: float) -> float:
    """Seconds without a heartbeat after which an instance counts as missing."""
    return 2 * every + 10


def cluster_summary(reader: ClusterReader, window: str, now: float) -> dict[str, Any]:
    """The cluster's summary of `window` (ValueError: not a cluster window)."""
    try:
        spec = CLUSTER_WINDOWS[window]
    except KeyError:
        known = ", ".join(CLUSTER_WINDOWS)
        raise ValueError(
            f"the cluster view has the windows {known}; longer ones are per instance "
            "(Redis keeps 48 hours of minutes)"
        ) from None
    since, end, until = spec.bounds(now)
    seen = {
        name: beat
        for name, beat in reader.instances(now).items()
        if beat["seen"] >= since  # an instance gone before the window is no part of it
    }
    names = sorted(seen)
    minutes = list(range(since, min(end, until + 1), MINUTE))
    found = reader.read(names, minutes)
    width = len(FIGURES)
    by_point: dict[int, list[float]] = {}
    by_route: dict[str, list[float]] = {}
    by_instance: dict[str, list[float]] = {name: [0.0] * width for name in names}
    tops: dict[str, dict[str, list[int]]] = {dim: {} for dim in DIMENSIONS}
    for (instance, minute), fields in found.items():
        point = minute // spec.step * spec.step
        for field, value in fields.items():
            kind, _, rest = field.partition("|")
            _pid, _, what = rest.partition("|")
            try:
                if kind == "r":
                    values = decode_row(value)
                    for held in (
                        by_point.setdefault(point, [0.0] * width),
                        by_route.setdefault(what, [0.0] * width),
                        by_instance[instance],
                    ):
                        held[:] = map(add, held, values)
                elif kind == "t" and what in tops:
                    counts = tops[what]
                    for key, n, extra in decode_top(value):
                        entry = counts.setdefault(key, [0, 0])
                        entry[0] += n
                        entry[1] += extra
            except (ValueError, TypeError):
                continue  # a field of another version: left out
    everything = [0.0] * width
    for values in by_point.values():
        everything[:] = map(add, everything, values)
    seconds = until - since
    summary = totals(everything, seconds)
    missing = [n for n in names if now - seen[n]["seen"] > missing_after(seen[n]["every"])]
    return {
        "scope": "cluster",
        "window": spec.name,
        "since": since,
        "until": until,
        "step": spec.step,
        "totals": summary,
        "series": _series(list(range(since, end, spec.step)), dict(by_point.items())),
        "routes": _routes(by_route),
        "top": {dim: _top(dim, counts) for dim, counts in tops.items()},
        # N/(K+1) from the workers' 5-second summaries, as much from the minutes' reductions
        "top_error": int(2 * summary["requests"] // (TOP_KEPT + 1)),
        "recent_errors": [],
        "instances": [_instance(n, by_instance[n], seen[n], n in missing, seconds) for n in names],
        "missing": missing,
    }


def _routes(by_route: Mapping[str, list[float]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for route, values in by_route.items():
        requests = values[_AT["requests"]]
        rows.append(
            {
                "route": route,
                "requests": int(requests),
                "error_rate": round(values[_AT["s5xx"]] / requests, 6) if requests else 0.0,
                "p95": _rounded(percentile(values[_LATENCY], 0.95)),
            }
        )
    rows.sort(key=lambda row: (-row["requests"], row["route"]))
    return rows


def _top(dim: str, counts: Mapping[str, list[int]]) -> list[dict[str, Any]]:
    ranked = sorted(counts.items(), key=lambda item: (-item[1][0], item[0]))[:TOP_SHOWN]
    if dim == "consumers":
        return [{"key": key, "requests": n, "limited": min(extra, n)} for key, (n, extra) in ranked]
    return [{"key": key, "requests": n} for key, (n, _) in ranked]


def _instance(
    name: str, values: list[float], beat: Mapping[str, float], missing: bool, seconds: int
) -> dict[str, Any]:
    figures = totals(values, seconds)
    return {
        "instance": name,
        "requests": figures["requests"],
        "rps": figures["rps"],
        "status": figures["status"],
        "rate_5xx": figures["rate_5xx"],
        "p95": figures["latency"]["p95"],
        "last_seen": beat["seen"],
        "missing": missing,
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
