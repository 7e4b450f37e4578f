"""Request metrics: what a counted batch of finished requests adds to the counters, how
workers' counts add up, and the Prometheus text that a scrape gets (parsed back with
prometheus-client's own parser). Requests go through the real tap."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bastion.http.request import Request
from bastion.observe.exposition import exposition
from bastion.observe.metrics import UNROUTED, RequestMetrics, merge
from bastion.observe.recorder import Tap
from bastion.observe.rows import RowTap
from bastion.observe.tap import RequestTap


@pytest.fixture(autouse=True, params=[RequestTap, RowTap], ids=["counting", "rows"])
def tap_kind(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test with the tap of each build (`recorder.request_tap`)."""
    _tap_kind[0] = request.param
    yield
    _tap_kind[0] = RequestTap


_tap_kind: list[Callable[..., Tap]] = [RequestTap]


def record(metrics: RequestMetrics, *finished_at: tuple[Request, float]) -> None:
    """The requests as the finish hook hands them to the tap, counted as one batch."""
    tap = _tap_kind[0]()
    for req, now in finished_at:
        req.ended = now
        tap.record(req)
    [(_, batch)] = tap.take(0.0)
    metrics.add(batch)


def finished(
    route: str,
    status: int,
    *,
    cache: str = "",
    upstream: float = -1.0,
    body: int = 0,
    out: int = 100,
    refused: str = "",
) -> Request:
    req = Request()
    req.route_name = route
    req.method = "GET"
    req.status = status
    req.cache = cache
    req.start = 100.0
    req.upstream_time = upstream
    req.body_bytes = body
    req.bytes_out = out
    req.refused_by = refused
    return req


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def requests_of(got: dict[tuple[str, tuple[tuple[str, str], ...]], float], route: str,
                status: str, cache: str = "") -> float:  # fmt: skip
    labels = (("cache", cache), ("method", "GET"), ("route", route), ("status", status))
    return got[("bastion_requests_total", labels)]


def test_requests_are_counted_by_route_method_status_class_and_cache() -> None:
    metrics = RequestMetrics()
    record(metrics, (finished("api", 200, cache="MISS"), 100.02))
    record(metrics, (finished("api", 204, cache="MISS"), 100.02))
    record(metrics, (finished("api", 200, cache="HIT"), 100.001))
    record(metrics, (finished("", 404), 100.001))
    record(metrics, (finished("api", 429, refused="rate_limits"), 100.001))
    got = samples(exposition(merge([metrics.snapshot()])))
    assert requests_of(got, "api", "2xx", "MISS") == 2
    assert requests_of(got, "api", "2xx", "HIT") == 1
    assert requests_of(got, UNROUTED, "4xx") == 1
    assert requests_of(got, "api", "4xx") == 1
    refused = ("bastion_refusals_total", (("policy", "rate_limits"), ("route", "api")))
    assert got[refused] == 1
    assert got[("bastion_build_info", (("version", "0.1.0"),))] == 1


def test_exact_status_codes_on_request() -> None:
    metrics = RequestMetrics(exact_status=True)
    record(metrics, (finished("api", 503), 100.5))
    got = samples(exposition(merge([metrics.snapshot()])))
    assert requests_of(got, "api", "503") == 1


def test_histograms_are_cumulative_with_a_sum_and_a_count() -> None:
    metrics = RequestMetrics()
    record(metrics, (finished("api", 200, upstream=0.004), 100.02))  # 20 ms in all
    record(metrics, (finished("api", 200, upstream=0.3), 100.4))  # 400 ms
    got = samples(exposition(merge([metrics.snapshot()])))
    total = "bastion_request_duration_seconds"
    assert got[(total + "_bucket", (("le", "0.01"), ("route", "api")))] == 0
    assert got[(total + "_bucket", (("le", "0.025"), ("route", "api")))] == 1
    assert got[(total + "_bucket", (("le", "0.5"), ("route", "api")))] == 2
    assert got[(total + "_bucket", (("le", "+Inf"), ("route", "api")))] == 2
    assert got[(total + "_count", (("route", "api"),))] == 2
    assert abs(got[(total + "_sum", (("route", "api"),))] - 0.42) < 1e-9
    upstream = "bastion_upstream_duration_seconds"
    assert got[(upstream + "_bucket", (("le", "0.005"), ("route", "api")))] == 1
    assert got[(upstream + "_count", (("route", "api"),))] == 2


def test_workers_add_up_through_their_snapshots() -> None:
    one, two = RequestMetrics(), RequestMetrics()
    record(one, (finished("api", 200, body=10, out=100), 100.01))
    record(two, (finished("api", 200, body=5, out=50), 100.01))
    record(two, (finished("web", 500), 100.01))
    # what a worker hands the others is JSON
    snapshots = [json.loads(json.dumps(m.snapshot())) for m in (one, two)]
    got = samples(exposition(merge(snapshots)))
    assert requests_of(got, "api", "2xx") == 2
    assert got[("bastion_request_body_bytes_total", (("route", "api"),))] == 15
    assert got[("bastion_response_bytes_total", (("route", "api"),))] == 150
    assert got[("bastion_request_duration_seconds_count", (("route", "api"),))] == 2
    assert got[("bastion_request_duration_seconds_count", (("route", "web"),))] == 1


def test_nothing_recorded_is_still_valid_text() -> None:
    got = samples(exposition(merge([RequestMetrics().snapshot()])))
    assert got == {
        ("bastion_build_info", (("version", "0.1.0"),)): 1,
        ("bastion_requests_in_flight", ()): 0,
    }


def test_the_metrics_listener_may_not_share_a_sites_address() -> None:
    import pytest

    from bastion.config import ConfigError, config_from_dict

    site = [{"routes": [{"path": "/", "respond": {}}]}]
    with pytest.raises(ConfigError) as info:
        config_from_dict(
            {
                "listen": {"http": "127.0.0.1:9000"},
                "metrics": {"listen": "127.0.0.1:9000"},
                "sites": site,
            }
        )
    assert [(i.path, i.message) for i in info.value.issues] == [
        (
            "metrics.listen",
            "'127.0.0.1:9000' is also listen.http: the metrics need an address of their own",
        )
    ]
    assert config_from_dict({"metrics": {"listen": "127.0.0.1:9001"}, "sites": site})
