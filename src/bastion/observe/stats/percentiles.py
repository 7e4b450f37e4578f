"""Percentiles from bucket counts, interpolated within `STATS_BUCKETS`.

A percentile falls in the bucket where the cumulative count reaches its rank; within the
bucket the requests are taken as spread evenly between its bounds (the way Prometheus'
`histogram_quantile` does it), so the error is at most the bucket's width. The last bucket
has no upper bound: a percentile falling there is reported as its lower bound (60 s).
"""

from __future__ import annotations

from collections.abc import Sequence

from bastion.observe.interval import STATS_BUCKETS

__all__ = ["percentile", "percentiles"]

QUANTILES = (0.5, 0.95, 0.99)


def percentile(counts: Sequence[float], q: float) -> float | None:
    """The q-quantile (0 < q <= 1) of a histogram of `STATS_BUCKETS` (+ the rest);
    None when it holds nothing."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    lower = 0.0
    for i, n in enumerate(counts):
        if i >= len(STATS_BUCKETS):
            return STATS_BUCKETS[-1]
        upper = STATS_BUCKETS[i]
        if n > 0 and seen + n >= rank:
            return lower + (upper - lower) * (rank - seen) / n
        seen += n
        lower = upper
    return STATS_BUCKETS[-1]


def percentiles(counts: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    """p50, p95 and p99."""
    p50, p95, p99 = (percentile(counts, q) for q in QUANTILES)
    return p50, p95, p99
