"""Intervals built by hand for the statistics tests: the real input type of the statistics
writer (what the recorder hands it once a second), with known figures."""

from __future__ import annotations

import bisect
from collections import Counter
from typing import Any

from bastion.observe.interval import BUCKET_COUNT, STATS_BUCKETS, Interval, RouteFigures

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
CURL = "curl/8.5.0"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def buckets(latency: float, n: int) -> list[int]:
    """`n` requests of `latency` seconds as STATS_BUCKETS counts."""
    counts = [0] * BUCKET_COUNT
    counts[bisect.bisect_left(STATS_BUCKETS, latency)] += n
    return counts


def figures(
    requests: int = 10,
    *,
    status: dict[int, int] | None = None,
    latency: float = 0.004,
    upstream: float | None = 0.003,
    cache: dict[str, int] | None = None,
    refusals: dict[str, int] | None = None,
    bytes_in: int = 0,
    bytes_out: int = 0,
) -> RouteFigures:
    """One route's figures: `requests` answered 200 unless `status` ({code: n}) says."""
    codes = status if status is not None else {200: requests}
    assert sum(codes.values()) == requests
    classes: dict[str, int] = {}
    for code, n in codes.items():
        classes[f"{code // 100}xx"] = classes.get(f"{code // 100}xx", 0) + n
    return RouteFigures(
        requests=requests,
        status=classes,
        codes=dict(codes),
        methods={"GET": requests},
        cache=dict(cache or {}),
        refusals=dict(refusals or {}),
        latency=buckets(latency, requests),
        latency_sum=latency * requests,
        upstream=buckets(upstream, requests) if upstream is not None else [0] * BUCKET_COUNT,
        upstream_sum=(upstream or 0.0) * requests,
        bytes_in=bytes_in,
        bytes_out=bytes_out,
    )


def interval(
    start: int,
    routes: dict[str, RouteFigures] | None = None,
    *,
    paths: dict[str, int] | None = None,
    not_found: dict[str, int] | None = None,
    clients: dict[str, int] | None = None,
    agents: dict[str, int] | None = None,
    referrers: dict[str, int] | None = None,
    consumers: dict[str, list[int]] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> Interval:
    made = Interval(start, routes=dict(routes if routes is not None else {"api": figures()}))
    for name, counts in (
        ("paths", paths),
        ("not_found", not_found),
        ("clients", clients),
        ("agents", agents),
        ("referrers", referrers),
    ):
        if counts:
            made.top[name] = Counter(counts)
    made.consumers = {name: list(pair) for name, pair in (consumers or {}).items()}
    made.errors = list(errors or [])
    return made
