"""The Prometheus text format of merged request metrics, written by `prometheus-client`.

A custom collector turns one merged snapshot (`bastion.observe.metrics.merge`) into metric
families; the library writes the format. Nothing here runs per request: a scrape builds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from bastion import __version__
from bastion.observe.metrics import DURATION_BUCKETS

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class MetricSource(Protocol):
    """More metric families for a scrape (observe/event_exposition.py): a collector in all
    but its base class, so that it can exist before prometheus-client is imported."""

    def collect(self) -> Iterator[Metric]: ...


class _Source(Collector):
    def __init__(self, source: MetricSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        return self.source.collect()


_BOUNDS = [repr(b) for b in DURATION_BUCKETS] + ["+Inf"]


class _Snapshot(Collector):
    def __init__(self, merged: dict[str, Any]) -> None:
        self.merged = merged

    def collect(self) -> Iterator[Metric]:
        merged = self.merged
        info = GaugeMetricFamily(
            "bastion_build_info", "bastion's version, as a label; always 1.", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        requests = CounterMetricFamily(
            "bastion_requests",
            "Requests answered, by route, method, status class (or code) and cache outcome.",
            labels=["route", "method", "status", "cache"],
        )
        for route, method, status, cache, count in merged["requests"]:
            requests.add_metric([route, method, status, cache], count)
        yield requests
        received = CounterMetricFamily(
            "bastion_request_body_bytes", "Request body bytes received.", labels=["route"]
        )
        sent = CounterMetricFamily(
            "bastion_response_bytes", "Response bytes sent (head and body).", labels=["route"]
        )
        for route, in_bytes, out_bytes in merged["bytes"]:
            received.add_metric([route], in_bytes)
            sent.add_metric([route], out_bytes)
        yield received
        yield sent
        yield _histogram(
            "bastion_request_duration_seconds",
            "From the request's first byte to the answer's last, as bastion saw it.",
            merged["durations"],
        )
        yield _histogram(
            "bastion_upstream_duration_seconds",
            "From sending the request upstream to the upstream's whole answer.",
            merged["upstream"],
        )
        refusals = CounterMetricFamily(
            "bastion_refusals",
            "Requests a route's policy refused, by policy (auth, rate limit, IP rule, ...).",
            labels=["route", "policy"],
        )
        for route, policy, count in merged["refusals"]:
            refusals.add_metric([route, policy], count)
        yield refusals
        in_flight = GaugeMetricFamily(
            "bastion_requests_in_flight",
            "Requests in progress (received, not yet answered in full), all workers.",
        )
        in_flight.add_metric([], merged.get("in_flight", 0))
        yield in_flight
        if merged.get("consumers"):
            consumers = CounterMetricFamily(
                "bastion_consumer_requests",
                "Requests by authenticated consumer (the top metrics.consumers, the others "
                'as "_other") and status class (or code).',
                labels=["consumer", "status"],
            )
            for consumer, status, count in merged["consumers"]:
                consumers.add_metric([consumer, status], count)
            yield consumers


def _histogram(name: str, documentation: str, rows: list[Any]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=["route"])
    for route, counts, total in rows:
        cumulative = []
        running = 0
        for bound, count in zip(_BOUNDS, counts, strict=True):
            running += count
            cumulative.append((bound, running))
        family.add_metric([route], cumulative, total)
    return family


def exposition(merged: dict[str, Any], extra: Iterable[MetricSource] = ()) -> bytes:
    """The Prometheus text format of one merged snapshot (and of `extra` sources)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(merged))
    for source in extra:
        registry.register(_Source(source))
    return generate_latest(registry)
