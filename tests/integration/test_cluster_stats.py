"""Statistics across instances through a real redis-server: two `bastion run` processes
with data dirs of their own write their minutes to one Redis; the admin API's cluster
scope and `bastion stats --cluster` add them up, with a row per instance, and say which
instance stopped writing. Each instance keeps its own statistics file either way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from bastion.observe.stats import StatsStore
from conftest import Backend, Gateway, free_port, wait_for_port
from rediskit import RedisServer
from rediskit import redis_cluster as redis_cluster  # the fixtures
from rediskit import redis_server as redis_server

if TYPE_CHECKING:
    from browserkit import Browser

pytest_plugins = ("browserkit",)  # the `browser` fixture
pytestmark = pytest.mark.timeout(120)

TOKEN_ENV = "BASTION_TEST_ADMIN_TOKEN"
TOKEN = "cluster-stats-token-3b9d0e51c7a24f86"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def instance_config(
    redis: str | dict[str, Any], backend: Backend, name: str, admin_port: int
) -> dict[str, Any]:
    return {
        "access_log": {"format": "off"},
        "state": {"redis": redis, "timeout": "2s"},
        # the smallest write interval: the test sees the minute in progress within a second
        "stats": {"cluster_interval": "1s", "instance": name},
        "admin": {"listen": f"127.0.0.1:{admin_port}", "token": "${" + TOKEN_ENV + "}"},
        "sites": [
            {"hosts": ["*"], "routes": [{"path": "/", "proxy": {"upstreams": [backend.url]}}]}
        ],
    }


def traffic(gw: Gateway, ok: int, not_found: int, failed: int) -> None:
    statuses = [gw.status_of("/hello") for _ in range(ok)]
    statuses += [gw.status_of("/status?code=404") for _ in range(not_found)]
    statuses += [gw.status_of("/status?code=503") for _ in range(failed)]
    assert statuses == [200] * ok + [404] * not_found + [503] * failed


def cluster(admin: str, window: str = "5m") -> httpx.Response:
    return httpx.get(f"{admin}/api/stats?scope=cluster&window={window}", headers=AUTH, timeout=10)


def wait_cluster(admin: str, requests: int, top: bool = False) -> dict[str, Any]:
    """The cluster view once it counts `requests` (and, with `top`, holds top-K tables:
    a worker writes them every few seconds)."""
    deadline = time.monotonic() + 30
    while True:
        r = cluster(admin)
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        complete = data["totals"]["requests"] >= requests
        if top:
            complete = complete and sum(row["requests"] for row in data["top"]["paths"]) >= requests
        if complete or time.monotonic() > deadline:
            return data
        time.sleep(0.3)


def stats_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion", "stats", "-c", str(config), "--cluster", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )


@pytest.fixture
def two_instances(
    redis_server: Callable[[], RedisServer],
    backend: Backend,
    gateway: Callable[..., Gateway],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[RedisServer, list[tuple[Gateway, str]]]:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    redis = redis_server()
    made = []
    for name, workers in (("alpha", 2), ("beta", 1)):
        admin_port = free_port()
        # alpha's two workers write their own fields of each minute: the view adds them
        settings = {**instance_config(redis.url, backend, name, admin_port), "workers": workers}
        gw = gateway(settings)
        wait_for_port(admin_port)
        made.append((gw, f"http://127.0.0.1:{admin_port}"))
    return redis, made


def test_the_cluster_view_adds_up_both_instances(
    two_instances: tuple[RedisServer, list[tuple[Gateway, str]]],
) -> None:
    _redis, [(alpha, alpha_admin), (beta, beta_admin)] = two_instances
    traffic(alpha, ok=24, not_found=4, failed=2)  # 30
    traffic(beta, ok=15, not_found=3, failed=2)  # 20

    data = wait_cluster(alpha_admin, 50, top=True)

    totals = data["totals"]
    assert totals["requests"] == 50, totals
    assert totals["status"] == {"1xx": 0, "2xx": 39, "3xx": 0, "4xx": 7, "5xx": 4}
    assert totals["rate_5xx"] == pytest.approx(4 / 50)
    assert totals["latency"]["p95"] is not None
    rows = {row["instance"]: row for row in data["instances"]}
    assert {name: row["requests"] for name, row in rows.items()} == {"alpha": 30, "beta": 20}
    assert rows["alpha"]["status"]["5xx"] == 2 and rows["beta"]["status"]["5xx"] == 2
    assert data["missing"] == [] and not any(row["missing"] for row in rows.values())
    assert data["instance"] == "alpha"
    paths = {row["key"]: row["requests"] for row in data["top"]["paths"]}
    assert paths["/hello"] == 39  # merged from both instances' summaries (exact: few keys)
    not_found = {row["key"]: row["requests"] for row in data["top"]["not_found"]}
    assert sum(not_found.values()) == 7

    # the other instance's admin API answers the same
    assert cluster(beta_admin).json()["totals"]["requests"] == 50
    # each instance's own scope and file hold only its own traffic
    assert (
        httpx.get(f"{alpha_admin}/api/stats?window=5m", headers=AUTH).json()["totals"]["requests"]
        == 30
    )
    assert StatsStore(beta.workdir / "data").summary("1h")["totals"]["requests"] == 20

    done = stats_cli(alpha.config_path, "--json", "--since", "5m")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["totals"]["requests"] == 50
    assert printed["totals"]["status"] == totals["status"]
    assert {r["instance"]: r["requests"] for r in printed["instances"]} == {
        "alpha": 30,
        "beta": 20,
    }
    text = stats_cli(alpha.config_path, "--since", "5m")
    assert text.returncode == 0, text.stderr
    assert "alpha" in text.stdout and "beta" in text.stdout and "requests" in text.stdout


def test_windows_beyond_the_minutes_in_redis_are_refused_with_a_reason(
    two_instances: tuple[RedisServer, list[tuple[Gateway, str]]],
) -> None:
    _redis, [(alpha, alpha_admin), _beta] = two_instances
    r = cluster(alpha_admin, "7d")
    assert r.status_code == 400
    assert "per instance" in r.json()["detail"]
    done = stats_cli(alpha.config_path, "--since", "30d")
    assert done.returncode == 1
    assert "per instance" in done.stderr and "Traceback" not in done.stderr


def test_a_stopped_instance_is_reported_missing_and_redis_loss_keeps_local_figures(
    two_instances: tuple[RedisServer, list[tuple[Gateway, str]]],
) -> None:
    redis, [(alpha, alpha_admin), (beta, _beta_admin)] = two_instances
    traffic(alpha, ok=3, not_found=0, failed=0)
    traffic(beta, ok=2, not_found=0, failed=0)
    wait_cluster(alpha_admin, 5)
    beta.stop()

    deadline = time.monotonic() + 30
    while True:  # missing after two write intervals and 10 s without a heartbeat
        data = cluster(alpha_admin).json()
        if data["missing"] == ["beta"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert data["missing"] == ["beta"]
    rows = {row["instance"]: row for row in data["instances"]}
    assert rows["beta"]["missing"] and not rows["alpha"]["missing"]
    assert data["totals"]["requests"] == 5  # what beta wrote before it stopped stays

    redis.stop()
    traffic(alpha, ok=4, not_found=0, failed=0)
    r = cluster(alpha_admin)
    assert r.status_code == 503 and "scope=instance" in r.json()["detail"]
    deadline = time.monotonic() + 20
    while True:  # the statistics file goes on without Redis
        local = httpx.get(f"{alpha_admin}/api/stats?window=5m", headers=AUTH).json()
        if local["totals"]["requests"] == 7 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert local["totals"]["requests"] == 7
    log = alpha.stderr
    deadline = time.monotonic() + 10
    while log.count("cannot write the cluster figures") < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
        log = alpha.stderr
    time.sleep(2)  # two more write intervals without Redis: nothing more is logged
    # once per worker (alpha has two) and transition, not once per write
    assert alpha.stderr.count("cannot write the cluster figures") == 2, log

    redis.start()  # the same port, empty: what was written before is gone with it
    deadline = time.monotonic() + 30
    while True:  # the minutes held while Redis was away are written again
        r = cluster(alpha_admin)
        rows = {row["instance"]: row for row in r.json().get("instances", [])}
        if (r.status_code == 200 and rows.get("alpha", {}).get("requests", 0) >= 4) or (
            time.monotonic() > deadline
        ):
            break
        time.sleep(0.3)
    assert r.status_code == 200 and rows["alpha"]["requests"] >= 4, r.text
    assert not rows["alpha"]["missing"]
    deadline = time.monotonic() + 10
    while alpha.stderr.count("Redis answers again") < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert alpha.stderr.count("Redis answers again") == 2  # once per worker


def test_the_dashboard_switches_to_the_cluster_scope(
    two_instances: tuple[RedisServer, list[tuple[Gateway, str]]], browser: Browser
) -> None:
    _redis, [(alpha, alpha_admin), (beta, _beta_admin)] = two_instances
    traffic(alpha, ok=8, not_found=1, failed=1)  # 10
    traffic(beta, ok=4, not_found=1, failed=0)  # 5
    wait_cluster(alpha_admin, 15)

    browser.login(alpha_admin, TOKEN)
    browser.select_window("5m")
    browser.wait_tile("requests", lambda v: v >= 10, timeout=30)
    assert browser.tile("requests") == 10  # this instance only
    assert browser.js("return document.querySelector('#cluster').hidden") is True

    browser.wait_for(
        lambda: browser.js("return !document.querySelector('#scopes').hidden"),
        message="the scope switch (shown with state.redis)",
    )
    browser.driver.find_element("css selector", 'button[data-scope="cluster"]').click()
    browser.wait_for(
        lambda: (
            browser.js("return document.body.dataset.scope") == "cluster"
            and browser.js("return document.body.dataset.stats") == "ready"
        ),
        message="the cluster scope",
    )
    assert browser.tile("requests") == 15
    assert browser.tile("rate_5xx") == pytest.approx(1 / 15, abs=1e-6)
    rows = browser.wait_for(lambda: browser.table("instances"), message="the instances table")
    by_name = {row["_key"]: row for row in rows}
    assert {name: row["requests"] for name, row in by_name.items()} == {"alpha": 10, "beta": 5}
    assert "this one" in by_name["alpha"]["instance"]
    assert by_name["beta"]["missing"] == "writing"
    # the windows Redis does not hold are not offered in the cluster scope
    assert browser.js("return document.querySelector('button[data-window=\"7d\"]').disabled")
    assert browser.js("return location.hash") == "#cluster/5m"

    browser.driver.find_element("css selector", 'button[data-scope="instance"]').click()
    browser.wait_for(
        lambda: (
            browser.js("return document.body.dataset.scope") == "instance"
            and browser.tile("requests") == 10
        ),
        message="back to this instance",
    )


def test_a_redis_cluster_holds_the_figures_of_two_instances(
    redis_cluster: list[RedisServer],
    backend: Backend,
    gateway: Callable[..., Gateway],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    redis = {"cluster": [f"127.0.0.1:{redis_cluster[0].port}"]}
    one = gateway(instance_config(redis, backend, "one", free_port()))
    two = gateway(instance_config(redis, backend, "two", free_port()))
    traffic(one, ok=3, not_found=0, failed=1)
    traffic(two, ok=2, not_found=1, failed=0)

    deadline = time.monotonic() + 30
    while True:
        done = stats_cli(one.config_path, "--json", "--since", "5m")
        assert done.returncode == 0, done.stderr
        printed = json.loads(done.stdout)
        if printed["totals"]["requests"] >= 7 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert printed["totals"]["status"] == {"1xx": 0, "2xx": 5, "3xx": 0, "4xx": 1, "5xx": 1}
    assert {r["instance"]: r["requests"] for r in printed["instances"]} == {"one": 4, "two": 3}
