"""`/metrics` through real sockets: known traffic over HTTP/1.1 and HTTP/2 through a real
`bastion run`, scraped from its metrics listener and parsed with prometheus-client's own
parser; totals across two workers; the allow list; nothing of it on the sites' listeners;
the in-flight gauge and the capped consumer labels."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from authtokens import create_key
from conftest import Backend, Gateway, free_port, wait_for_port

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    found: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def requests_of(got: Samples, route: str, status: str, method: str = "GET") -> float:
    labels = (("cache", ""), ("method", method), ("route", route), ("status", status))
    return got.get(("bastion_requests_total", labels), 0.0)


def until(port: int, done: Callable[[Samples], bool]) -> Samples:
    """Scrape until `done` holds (other workers' counts arrive within a second or two)."""
    deadline = time.monotonic() + 15
    while True:
        got = scrape(port)
        if done(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def site(backend: Backend) -> list[dict[str, object]]:
    return [
        {
            "hosts": ["*"],
            "routes": [
                {"path": "/api/", "proxy": {"upstreams": [backend.url]}},
                {"path": "/limited", "rate_limits": [{"rate": "1/1h"}], "respond": {}},
            ],
        }
    ]


def test_traffic_over_both_protocols_is_counted_by_route(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    http, https, metrics = free_port(), free_port(), free_port()
    data = tmp_path / "data"
    gateway(
        {
            "listen": {"http": f"127.0.0.1:{http}", "https": f"127.0.0.1:{https}"},
            "data_dir": str(data),
            "access_log": {"format": "off"},
            "metrics": {"listen": f"127.0.0.1:{metrics}"},
            "sites": site(backend),
        }
    )
    wait_for_port(https)
    wait_for_port(metrics)
    context = ssl.create_default_context(cafile=str(data / "ca" / "root.crt"))
    base = f"https://localhost:{https}"
    with httpx.Client(verify=context) as client:  # HTTP/1.1 over TLS
        for i in range(3):
            r = client.get(f"{base}/api/item/{i}")
            assert r.http_version == "HTTP/1.1" and r.status_code == 200
        assert client.get(f"{base}/nowhere").status_code == 404
        assert client.post(f"{base}/api/up", content=b"x" * 1000).status_code == 200
    with httpx.Client(http1=False, http2=True, verify=context) as client:
        for _ in range(2):
            r = client.get(f"{base}/api/h2")
            assert r.http_version == "HTTP/2" and r.status_code == 200
        assert client.get(f"{base}/limited").status_code == 200
        assert client.get(f"{base}/limited").status_code == 429

    got = scrape(metrics)
    assert requests_of(got, "/api/", "2xx") == 5  # 3 over HTTP/1.1, 2 over HTTP/2
    assert requests_of(got, "/api/", "2xx", "POST") == 1
    assert requests_of(got, "none", "4xx") == 1  # no route: the route label is not the path
    assert requests_of(got, "/limited", "4xx") == 1
    assert got[("bastion_refusals_total", (("policy", "rate_limits"), ("route", "/limited")))]
    assert got[("bastion_request_body_bytes_total", (("route", "/api/"),))] == 1000
    assert got[("bastion_request_duration_seconds_count", (("route", "/api/"),))] == 6
    assert got[("bastion_upstream_duration_seconds_count", (("route", "/api/"),))] == 6
    assert not any("item" in value for _, labels in got for _, value in labels)
    # the sites' listeners do not serve it, and the metrics listener serves nothing else
    with httpx.Client(verify=context) as client:
        assert client.get(f"{base}/metrics").status_code == 404
    assert httpx.get(f"http://127.0.0.1:{metrics}/api/item/1").status_code == 404
    assert httpx.post(f"http://127.0.0.1:{metrics}/metrics").status_code == 405


def test_every_worker_answers_with_the_totals_of_all(
    backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    metrics = free_port()
    gw = gateway(
        {
            "workers": 2,
            "access_log": {"format": "off"},
            "metrics": {"listen": f"127.0.0.1:{metrics}"},
            "sites": site(backend),
        }
    )
    wait_for_port(metrics)
    for i in range(40):  # a new connection each: the kernel spreads them over the workers
        r = httpx.get(f"{gw.url}/api/{i}", headers={"Connection": "close"})
        assert r.status_code == 200
    # each scrape reaches one worker or the other: every one of them sums both
    for _ in range(6):
        got = until(metrics, lambda got: requests_of(got, "/api/", "2xx") == 40)
        assert requests_of(got, "/api/", "2xx") == 40


def test_addresses_outside_the_allow_list_get_403(
    backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    metrics = free_port()
    gateway(
        {
            "access_log": {"format": "off"},
            "metrics": {"listen": f"127.0.0.1:{metrics}", "allow": ["10.0.0.0/8"]},
            "sites": site(backend),
        }
    )
    wait_for_port(metrics)
    r = httpx.get(f"http://127.0.0.1:{metrics}/metrics")
    assert r.status_code == 403
    assert "bastion_requests_total" not in r.text


@pytest.mark.parametrize(("protocol", "workers"), [("h1", 1), ("h2", 1), ("h1", 2)])
def test_a_request_in_progress_is_in_flight_until_answered(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path, protocol: str, workers: int
) -> None:
    https, metrics = free_port(), free_port()
    data = tmp_path / "data"
    gateway(
        {
            "listen": {"http": f"127.0.0.1:{free_port()}", "https": f"127.0.0.1:{https}"},
            "data_dir": str(data),
            "workers": workers,
            "access_log": {"format": "off"},
            "metrics": {"listen": f"127.0.0.1:{metrics}"},
            "sites": site(backend),
        }
    )
    wait_for_port(https)
    wait_for_port(metrics)
    in_flight = ("bastion_requests_in_flight", ())
    assert scrape(metrics)[in_flight] == 0
    context = ssl.create_default_context(cafile=str(data / "ca" / "root.crt"))
    h2 = protocol == "h2"
    answers: list[tuple[int, str]] = []

    def slow_request() -> None:
        with httpx.Client(http1=not h2, http2=h2, verify=context, timeout=30) as client:
            r = client.get(f"https://localhost:{https}/api/slow?s=5")
            answers.append((r.status_code, r.http_version))

    slow = threading.Thread(target=slow_request)
    slow.start()
    try:
        # the backend holds the request: a scrape of any worker sees it in progress
        assert until(metrics, lambda got: got[in_flight] == 1)[in_flight] == 1
    finally:
        slow.join()
    assert answers == [(200, "HTTP/2" if h2 else "HTTP/1.1")]
    got = until(metrics, lambda got: got[in_flight] == 0 and requests_of(got, "/api/", "2xx"))
    assert got[in_flight] == 0
    assert requests_of(got, "/api/", "2xx") == 1


def test_consumers_are_labelled_up_to_the_configured_number(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    metrics = free_port()
    data = tmp_path / "data"
    alice, bob = create_key(data, "alice"), create_key(data, "bob")
    gw = gateway(
        {
            "data_dir": str(data),
            "access_log": {"format": "off"},
            "metrics": {"listen": f"127.0.0.1:{metrics}", "consumers": 1},
            "sites": [
                {
                    "hosts": ["*"],
                    "routes": [
                        {
                            "path": "/api/",
                            "auth": {"api_keys": {}},
                            "rate_limits": [{"rate": "2/1h", "key": "consumer"}],
                            "proxy": {"upstreams": [backend.url]},
                        }
                    ],
                }
            ],
        }
    )
    wait_for_port(metrics)
    statuses = [
        httpx.get(f"{gw.url}/api/{i}", headers={"X-API-Key": alice}).status_code for i in range(3)
    ]
    assert statuses == [200, 200, 429]
    assert httpx.get(f"{gw.url}/api/b", headers={"X-API-Key": bob}).status_code == 200
    assert httpx.get(f"{gw.url}/api/anonymous").status_code == 401
    got = scrape(metrics)
    consumers = {
        (dict(labels)["consumer"], dict(labels)["status"]): value
        for (name, labels), value in got.items()
        if name == "bastion_consumer_requests_total"
    }
    # alice has the most requests: her own label; bob is one of the others; the
    # request without a key has no consumer
    assert consumers == {("alice", "2xx"): 2, ("alice", "4xx"): 1, ("_other", "2xx"): 1}
    assert requests_of(got, "/api/", "4xx") == 2  # the 429 and the 401


def test_a_reload_keeps_the_counts_and_applies_the_labels_at_once(
    backend: Backend, gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    metrics, port = free_port(), free_port()
    config: dict[str, object] = {
        "listen": {"http": f"127.0.0.1:{port}"},
        "data_dir": str(tmp_path / "data"),
        "access_log": {"format": "off"},
        "metrics": {"listen": f"127.0.0.1:{metrics}"},
        "sites": site(backend),
    }
    gw = gateway(config)
    wait_for_port(metrics)
    for i in range(3):
        assert httpx.get(f"{gw.url}/api/{i}").status_code == 200
    assert requests_of(scrape(metrics), "/api/", "2xx") == 3
    config["metrics"] = {"listen": f"127.0.0.1:{metrics}", "status_codes": True}
    gw.reload(config, wait_for="configuration reloaded")
    for i in range(2):
        assert httpx.get(f"{gw.url}/api/{i}").status_code == 200
    got = scrape(metrics)
    assert requests_of(got, "/api/", "200") == 5  # the counts from before the reload too
    assert requests_of(got, "/api/", "2xx") == 0
