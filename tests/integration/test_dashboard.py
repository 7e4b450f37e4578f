"""The dashboard in a real browser against a real gateway: known traffic goes through the
gateway (200, 404, 500, a cache hit, a 401 refusal, a consumer, a path crafted as HTML), a
person logs in through the login page, and the page shows those numbers; the live view moves
when a request arrives; the hostile path is shown as text; "Renew now" orders a new
certificate from a real ACME server (Pebble) and says so.

With BASTION_DASHBOARD_SCREENSHOTS=<dir> the test also drives varied traffic for a while and
saves the screenshots of the docs (docs/images/dashboard-*.png) into <dir>.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml

from authtokens import create_key
from conftest import Backend, Gateway, free_port, raw_request, wait_for_port
from pebble_support import NAMES, Pebble, acme_config, wait_for_log
from pebble_support import pebble_fixture as pebble_fixture  # the `pebble` fixture

if TYPE_CHECKING:
    from browserkit import Browser

pytest_plugins = ("browserkit",)  # the `browser` fixture

TOKEN_ENV = "BASTION_TEST_ADMIN_TOKEN"
TOKEN = "dashboard-test-token-6f1c0b7e9a2d4c58"
# a path that is HTML when inserted as HTML: it sets a mark on the page if it ever runs
HOSTILE = "/x/<img/src=x/onerror=document.body.dataset.pwned=1>"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
REFERRER = "https://docs.example.org/start"
HOSTILE_REFERRER = 'https://evil.example/"><img src=x onerror="document.body.dataset.pwned=2">'


def approx(value: float) -> Any:
    return pytest.approx(value, abs=1e-6)


def config(
    backend: Backend, port: int, https_port: int, admin_port: int, data: Path, metrics_port: int
) -> dict:
    proxy = {"upstreams": [backend.url]}
    return {
        "listen": {"http": f"127.0.0.1:{port}", "https": f"127.0.0.1:{https_port}"},
        "data_dir": str(data),
        "access_log": {"format": "off"},
        "admin": {"listen": f"127.0.0.1:{admin_port}", "token": "${" + TOKEN_ENV + "}"},
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
        "sites": [
            # a certificate of the local CA, for the certificates table and its renew action
            {
                "hosts": ["localhost"],
                "tls": "internal",
                "routes": [{"path": "/", "respond": {"status": 200, "body": "tls"}}],
            },
            {
                "hosts": ["*"],
                "tls": "off",
                "routes": [
                    {"path": "/api/", "proxy": proxy},
                    {"path": "/cached/", "cache": {"ttl": "5m"}, "proxy": proxy},
                    {
                        "path": "/private/",
                        "auth": {"api_keys": {}},
                        "quotas": [{"limit": 100, "per": "day", "key": "consumer"}],
                        "proxy": proxy,
                    },
                    # a dead upstream: nothing listens there (502)
                    {"path": "/dead/", "proxy": {"upstreams": [f"http://127.0.0.1:{free_port()}"]}},
                ],
            },
        ],
    }


class Traffic:
    """Requests through the gateway whose outcome the test knows."""

    def __init__(self, gw: Gateway, backend: Backend, key: str) -> None:
        self.gw = gw
        self.backend = backend
        self.key = key
        self.client = httpx.Client(base_url=gw.url, timeout=10)

    def get(self, path: str, status: int, **headers: str) -> httpx.Response:
        resp = self.client.get(path, headers=headers)
        assert resp.status_code == status, (path, resp.status_code, resp.text)
        return resp

    def known(self) -> dict[str, Any]:
        """The test's traffic; what the dashboard should count."""
        for _ in range(6):
            self.get("/api/ok", 200, **{"User-Agent": FIREFOX, "Referer": REFERRER})
        for _ in range(2):
            self.get("/missing", 404, **{"User-Agent": GOOGLEBOT, "Referer": HOSTILE_REFERRER})
        answer = raw_request(
            self.gw.port,
            f"GET {HOSTILE} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode(),
        )
        assert answer.startswith(b"HTTP/1.1 404"), answer[:100]
        self.get("/api/status?code=500", 500)
        failed = self.backend.requests[-1]
        request_id = dict(failed["headers"]).get("x-request-id")
        self.get("/dead/thing", 502)
        for _ in range(3):  # a miss, then two hits
            self.get("/cached/item", 200)
        for _ in range(2):
            self.get("/private/thing", 401)
        for _ in range(3):
            self.get("/private/thing", 200, **{"X-API-Key": self.key})
        return {
            "requests": 19,
            "2xx": 12,
            "4xx": 5,
            "5xx": 2,
            "routes": {"/api/": 7, "/cached/": 3, "/private/": 5, "/dead/": 1, "none": 3},
            "request_id": request_id,
        }

    def close(self) -> None:
        self.client.close()


Dashboard = tuple[Gateway, str, Traffic]  # the gateway, the admin listener's URL, traffic


@pytest.fixture
def start_dashboard(
    backend: Backend,
    gateway: Callable[..., Gateway],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., Dashboard]]:
    """`start_dashboard(stats=True)`: a gateway with the admin listener and a consumer key."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    made: list[Traffic] = []

    def start(stats: bool = True) -> Dashboard:
        data = tmp_path / "data"
        key = create_key(data, "acme")
        admin_port = free_port()
        settings = config(backend, free_port(), free_port(), admin_port, data, free_port())
        if not stats:
            settings["stats"] = {"enabled": False}
        gw = gateway(settings)
        wait_for_port(admin_port)
        made.append(Traffic(gw, backend, key))
        return gw, f"http://127.0.0.1:{admin_port}", made[-1]

    yield start
    for traffic in made:
        traffic.close()


@pytest.fixture
def dashboard(start_dashboard: Callable[..., Dashboard]) -> Dashboard:
    return start_dashboard()


@pytest.mark.timeout(360)  # with BASTION_DASHBOARD_SCREENSHOTS it also drives 100 s of traffic
def test_dashboard_shows_the_traffic_and_moves_live(dashboard: Dashboard, browser: Browser) -> None:
    _gw, admin, traffic = dashboard
    expected = traffic.known()

    # --- log in through the login page; the page then loads on its own origin
    browser.login(admin, TOKEN)
    assert TOKEN not in browser.driver.page_source
    browser.select_window("5m")
    # the figures reach the statistics within a couple of seconds: wait for them, then compare
    browser.wait_tile("requests", lambda v: v >= expected["requests"], timeout=30)
    assert browser.tile("requests") == expected["requests"]
    # (shares come rounded to 6 decimals)
    assert browser.tile("rate_5xx") == approx(expected["5xx"] / expected["requests"])
    assert browser.tile("rate_4xx") == approx(expected["4xx"] / expected["requests"])
    assert browser.tile("cache_ratio") == approx(2 / 3)
    assert browser.tile("p95") is not None and browser.tile("p95") > 0
    days = browser.tile("cert_days")
    assert days is not None and 0 < days <= 7  # the local CA's leaves last 7 days

    routes = {row["_key"]: row for row in browser.table("routes") or []}
    assert {name: row["requests"] for name, row in routes.items()} == expected["routes"]
    assert routes["/api/"]["error_rate"] == approx(1 / 7)
    # the top tables are written every few seconds (not each second like the counts), and
    # the page reloads the window every 5 s: wait for them too
    def acme_seen() -> dict[str, Any] | None:
        rows = {row["_key"]: row for row in browser.table("consumers") or []}
        return rows if rows.get("acme", {}).get("requests") == 3 else None

    consumers = browser.wait_for(acme_seen, 30, "the consumers table")
    assert consumers["acme"]["requests"] == 3
    assert consumers["acme"]["quota"] == "3 / 100 (3 %)"  # its quota of the day
    not_found = {row["_key"]: row["requests"] for row in browser.table("not_found") or []}
    assert not_found["/missing"] == 2
    referrers = {row["_key"]: row["requests"] for row in browser.table("referrers") or []}
    assert referrers[REFERRER] == 6
    assert referrers[HOSTILE_REFERRER] == 2
    browsers = {row["_key"]: row["requests"] for row in browser.table("browsers") or []}
    assert browsers.get("Firefox") == 6, browsers
    errors = browser.table("recent_errors") or []
    assert [row["status"] for row in errors] == [502, 500]  # the newest first
    if expected["request_id"]:
        assert errors[1]["_key"] == expected["request_id"]
    status_chart = browser.chart("status")
    assert status_chart["total"] == expected["requests"]
    assert browser.chart("refusals")["series"]["r401"] == 2

    # --- the same traffic in the Prometheus metrics and in `bastion stats`
    check_metrics_and_stats(_gw, expected)

    # --- the hostile path and referrer are text, never markup
    paths = {row["_key"]: row for row in browser.table("paths") or []}
    assert HOSTILE in paths and paths[HOSTILE]["key"] == HOSTILE
    assert browser.row("referrers", HOSTILE_REFERRER)["key"] == HOSTILE_REFERRER
    assert browser.js("return document.querySelectorAll('main img').length") == 0
    assert browser.js("return document.body.dataset.pwned") is None

    # --- the live view: seeded with the last 5 minutes, then one event a second
    browser.select_window("live")
    browser.wait_for(lambda: browser.js("return document.body.dataset.live") == "open", 15, "live")
    browser.wait_tile("requests", lambda v: v >= expected["requests"], timeout=15)
    # the chart plots requests per second: four more in the coming seconds add 4 to its sum
    before = browser.chart("status")["total"]
    for _ in range(4):
        traffic.get("/api/live-check", 200)
    browser.wait_for(
        lambda: browser.chart("status")["total"] >= before + 4 - 1e-6,
        15,
        "the live chart to move",
    )
    browser.wait_tile("requests", lambda v: v >= expected["requests"] + 4, timeout=15)
    assert browser.tile("in_flight") == 0  # all workers' requests in progress: none now

    # the local CA's certificate is listed, with its source
    local = browser.row("certificates", "localhost")
    assert local is not None and local["source"] == "local CA", local

    # no script error, no blocked resource (a Content-Security-Policy refusal logs one)
    problems = [m for m in browser.console_errors() if "favicon" not in m]
    assert problems == []

    shots = os.environ.get("BASTION_DASHBOARD_SCREENSHOTS")
    if shots:
        take_screenshots(browser, traffic, Path(shots))


def test_dashboard_needs_a_login_and_says_what_is_missing(
    dashboard: Dashboard, browser: Browser
) -> None:
    """Without the session cookie the API answers 401 and the page goes to /login; a wrong
    token does not get in; once in, a gateway without traffic says so rather than drawing
    empty charts."""
    _gw, admin, _traffic = dashboard
    assert httpx.get(f"{admin}/api/overview").status_code == 401
    browser.open(f"{admin}/")
    browser.wait_for(lambda: "/login" in browser.driver.current_url, 15, "the login page")
    with pytest.raises(AssertionError):
        browser.login(admin, "not-the-token", timeout=5)
    assert browser.js("return document.querySelector('[data-tile]')") is None

    browser.login(admin, TOKEN)
    browser.select_window("1h")
    assert browser.chart("status")["empty"] == "no traffic in this window"
    assert browser.text_of("#routes") == "no traffic in this window"
    assert browser.text_of("#alerts") == "no alert rules configured"
    assert browser.tile("requests") == 0


def check_metrics_and_stats(gw: Gateway, expected: dict[str, Any]) -> None:
    """`/metrics` and `bastion stats --json` count what the dashboard showed."""
    config = yaml.safe_load(gw.config_path.read_text())
    scrape = httpx.get(f"http://{config['metrics']['listen']}/metrics").text
    requests: dict[str, float] = {}
    for line in scrape.splitlines():
        if line.startswith("bastion_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            status = labels.split('status="', 1)[1].split('"', 1)[0]
            requests[status] = requests.get(status, 0.0) + float(value)
    assert sum(requests.values()) == expected["requests"], scrape
    assert requests.get("5xx") == expected["5xx"] and requests.get("4xx") == expected["4xx"]
    assert 'bastion_upstream_errors_total{' in scrape and 'kind="connect"' in scrape
    assert 'bastion_auth_failures_total{' in scrape
    printed = subprocess.run(
        [sys.executable, "-m", "bastion", "stats", "--since", "5m", "--json",
         "-c", str(gw.config_path)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    totals = json.loads(printed.stdout)["totals"]
    assert totals["requests"] == expected["requests"]
    assert totals["status"]["5xx"] == expected["5xx"]
    assert totals["refusals"]["401"] == 2


def test_dashboard_without_statistics(
    start_dashboard: Callable[..., Dashboard], browser: Browser
) -> None:
    """`stats.enabled: false`: the page says the statistics are off instead of showing zeros,
    and what does not come from them (upstreams, certificates) is still there."""
    _gw, admin, traffic = start_dashboard(stats=False)
    traffic.get("/api/ok", 200)
    browser.login(admin, TOKEN)
    browser.select_window("1h")
    assert browser.js("return document.body.dataset.stats") == "off"
    assert "statistics are off" in (browser.chart("status")["empty"] or "")
    assert "statistics are off" in browser.text_of("#routes")
    assert browser.tile("requests") is None
    assert browser.row("certificates", "localhost") is not None


def test_dashboard_renews_a_certificate(
    pebble: Callable[..., Pebble],
    backend: Backend,
    gateway: Callable[..., Gateway],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    browser: Browser,
) -> None:
    """ "Renew now" orders a new certificate at once (one more order at the CA), and the page
    shows the new expiry; a failed renewal shows the CA's reason."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    http, https, admin_port = free_port(), free_port(), free_port()
    ca = pebble(http)
    settings = acme_config(tmp_path, backend, ca, http, https)
    settings["admin"] = {"listen": f"127.0.0.1:{admin_port}", "token": "${" + TOKEN_ENV + "}"}
    gw = gateway(settings, port=https)
    wait_for_log(gw, "acme: serving the certificate for " + ", ".join(NAMES))
    admin = f"http://127.0.0.1:{admin_port}"
    browser.login(admin, TOKEN)

    def acme_row() -> dict[str, Any] | None:
        rows = browser.table("certificates") or []
        return next((r for r in rows if r["_key"] in NAMES and r["source"] == "acme"), None)

    row = browser.wait_for(acme_row, 15, "the ACME certificate in the table")
    orders = ca.new_orders()
    name = row["_key"]
    browser.driver.find_element("css selector", f'[data-renew="{name}"]').click()
    outcome = f'[data-renew-result="{name}"]'
    result = browser.wait_for(
        lambda: (text := browser.text_of(outcome)) not in ("", "renewing…") and text,
        60,
        "the renewal's result",
    )
    assert result.startswith("renewed until "), result
    assert ca.new_orders() > orders  # an order reached the CA (badNonce retries repeat it)

    # the CA goes away: the page says the renewal failed and why, and keeps the row
    ca.stop()
    browser.driver.find_element("css selector", f'[data-renew="{name}"]').click()
    result = browser.wait_for(
        lambda: (text := browser.text_of(outcome)).startswith("failed") and text,
        90,
        "the failed renewal's result",
    )
    assert "renewal failed" in result, result
    assert acme_row() is not None


def take_screenshots(browser: Browser, traffic: Traffic, target: Path) -> None:
    """100 seconds of traffic of several kinds, then the overview (5 min, the whole page)
    and the live view (its top) while the traffic goes on."""
    stop = threading.Event()
    sender = threading.Thread(target=varied_traffic, args=(traffic.gw.url, stop), daemon=True)
    sender.start()
    try:
        time.sleep(100)  # the traffic the pictures show, not a wait for a result
        browser.select_window("5m")
        browser.wait_tile("requests", lambda v: v > 300, timeout=30)
        browser.screenshot(target / "dashboard-overview.png")
        browser.select_window("live")
        browser.wait_for(lambda: browser.js("return document.body.dataset.live") == "open", 15)
        points = browser.chart("status")["points"]
        browser.wait_for(lambda: browser.chart("status")["points"] >= points + 20, 40, "events")
        browser.screenshot(target / "dashboard-live.png", height=1000)
    finally:
        stop.set()
        sender.join(10)


def varied_traffic(url: str, stop: threading.Event) -> None:
    """Requests of several routes, agents and outcomes at a varying pace until `stop`."""
    agents = [
        FIREFOX,
        GOOGLEBOT,
        "curl/8.5.0",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36",
    ]
    paths = ["/api/orders", "/api/users/42", "/api/search?q=x", "/cached/catalog", "/api/health"]
    started = time.monotonic()
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set():
            pace = 6 + 4 * math.sin((time.monotonic() - started) / 15)
            for _ in range(int(random.uniform(0.5, 1.5) * pace)):
                headers = {"User-Agent": random.choice(agents)}
                if random.random() < 0.3:
                    headers["Referer"] = REFERRER
                try:
                    client.get(random.choice(paths), headers=headers)
                    if random.random() < 0.05:
                        client.get("/api/status?code=503")
                    if random.random() < 0.1:
                        client.get("/private/report")
                    if random.random() < 0.08:
                        client.get("/wp-login.php")
                except httpx.HTTPError:
                    pass
            stop.wait(0.5)
