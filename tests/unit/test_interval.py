"""The Interval, the form in which every consumer of traffic figures reads them."""

from collections import Counter

import pytest

from bastion.observe.interval import BUCKET_COUNT, MAX_ERRORS, Interval, RouteFigures


def _interval(start: int, requests: int, status: str = "2xx") -> Interval:
    figures = RouteFigures(requests=requests, status={status: requests}, codes={200: requests})
    figures.latency[3] = requests
    figures.latency_sum = 0.002 * requests
    interval = Interval(start, routes={"/api/": figures})
    interval.top["paths"] = Counter({"/api/a": requests})
    interval.consumers["alice"] = [requests, 1]
    interval.errors.append({"time": float(start), "status": 502, "request_id": f"r{start}"})
    return interval


def test_json_round_trip_keeps_every_figure() -> None:
    interval = _interval(1_700_000_000, 5)
    again = Interval.from_json(interval.to_json())
    assert again == interval
    # exact codes travel as strings in JSON and come back as integers
    assert interval.to_json()["routes"]["/api/"]["codes"] == {"200": 5}
    assert again.routes["/api/"].codes == {200: 5}


def test_merge_adds_up_workers() -> None:
    a, b = _interval(10, 3), _interval(10, 4, "5xx")
    total = a.merge([b])
    figures = total.routes["/api/"]
    assert total.requests == 7
    assert figures.status == {"2xx": 3, "5xx": 4}
    assert figures.latency[3] == 7
    assert figures.latency_sum == pytest.approx(0.014)
    assert total.top["paths"]["/api/a"] == 7
    assert total.consumers["alice"] == [7, 2]
    assert len(total.errors) == 2
    assert a.requests == 3  # the inputs are left alone


def test_merge_keeps_the_latest_errors_only() -> None:
    many = [_interval(t, 1) for t in range(MAX_ERRORS + 5)]
    total = many[0].merge(many[1:])
    assert len(total.errors) == MAX_ERRORS
    assert total.errors[-1]["request_id"] == f"r{MAX_ERRORS + 4}"


def test_buckets_of_another_layout_are_refused() -> None:
    data = _interval(1, 1).to_json()
    data["routes"]["/api/"]["latency"] = [0] * (BUCKET_COUNT - 1)
    with pytest.raises(ValueError):
        Interval.from_json(data)
