"""Alert rules evaluated on figures the test sets, with a ManualClock: each kind fires once
and resolves once, N of M, the missing-data policies, no repeated notification, reloads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from bastion.clock import ManualClock
from bastion.config import config_from_dict
from bastion.config.alert_models import RULE_KINDS, Alerts
from bastion.observe.alerts import (
    AlertManager,
    Certificate,
    Notification,
    PoolHealth,
    QuotaUse,
    ReloadResult,
    StoreFallback,
)
from bastion.observe.alerts.manager import SETTLE
from bastion.observe.alerts.measure import MEASURES

START = 1_800_000_000.0  # a whole minute
DAY = 86400.0


def totals(
    requests: int = 0,
    *,
    s5: int = 0,
    s4: int = 0,
    p95: float | None = None,
    up95: float | None = None,
    limited: int = 0,
) -> dict[str, Any]:
    """The "totals" shape of the statistics store."""
    return {
        "requests": requests,
        "status": {"1xx": 0, "2xx": requests - s5 - s4, "3xx": 0, "4xx": s4, "5xx": s5},
        "latency": {"p50": p95, "p95": p95, "p99": p95},
        "upstream_latency": {"p50": up95, "p95": up95, "p99": up95},
        "refusals": {"401": 0, "403": 0, "429": limited},
    }


class Figures:
    """An AlertInputs whose figures the test sets."""

    def __init__(self) -> None:
        self.traffic: dict[str | None, dict[str, Any]] = {None: totals(100, p95=0.05, up95=0.02)}
        self.health: dict[str, PoolHealth] = {"api": PoolHealth(2, 2)}
        self.certs: list[Certificate] = [Certificate(("a.example.test",), START + 60 * DAY)]
        self.quota: dict[str, QuotaUse] = {"acme": QuotaUse(10, 1000)}
        self.reload: ReloadResult | None = None
        self.store: StoreFallback | None = StoreFallback(0, 0)
        self.asked: list[tuple[float, float, str | None]] = []
        self.broken = False

    def period(self, since: float, until: float, route: str | None = None) -> dict[str, Any]:
        if self.broken:
            raise OSError("the statistics store is unreadable")
        self.asked.append((since, until, route))
        return self.traffic.get(route, totals(0))

    def pools(self) -> dict[str, PoolHealth]:
        return self.health

    def certificates(self) -> list[Certificate]:
        return self.certs

    def quotas(self) -> dict[str, QuotaUse]:
        return self.quota

    def last_reload(self) -> ReloadResult | None:
        return self.reload

    def store_fallback(self) -> StoreFallback | None:
        return self.store


def settings(rules: dict[str, Any]) -> Alerts:
    data = {"sites": [{"routes": [{"path": "/", "respond": {"status": 200}}]}]}
    return config_from_dict({**data, "alerts": {"rules": rules}}).config.alerts


class Harness:
    def __init__(self, rules: dict[str, Any]) -> None:
        self.clock = ManualClock(START + SETTLE)
        self.figures = Figures()
        self.manager = AlertManager(settings(rules), self.figures, self.clock)

    def step(self, seconds: float = 60.0) -> list[tuple[str, str]]:
        """Move the clock on and evaluate: the notifications as (alert, state)."""
        self.clock.advance(seconds)
        return [(n.alert, n.state) for n in self.manager.evaluate()]

    def state(self, name: str = "r") -> str:
        return next(s["state"] for s in self.manager.status() if s["name"] == name)


Change = Callable[[Figures], None]


def _set(attr: str, value: Any) -> Change:
    return lambda f: setattr(f, attr, value)


KINDS: dict[str, tuple[dict[str, Any], Change, Change]] = {
    "error_rate": (
        {"threshold": 0.1},
        _set("traffic", {None: totals(100, s5=30)}),
        _set("traffic", {None: totals(100, s5=2)}),
    ),
    "latency": (
        {"threshold": "300ms", "of": "upstream"},
        _set("traffic", {None: totals(100, p95=0.05, up95=0.9)}),
        _set("traffic", {None: totals(100, p95=0.9, up95=0.05)}),
    ),
    "pool_unhealthy": (
        {"down_for": 0},
        _set("health", {"api": PoolHealth(0, 2)}),
        _set("health", {"api": PoolHealth(1, 2)}),
    ),
    "certificate_expiry": (
        {"days": 10},
        _set("certs", [Certificate(("a.example.test",), START + 5 * DAY)]),
        _set("certs", [Certificate(("a.example.test",), START + 90 * DAY)]),
    ),
    "renewal_failed": (
        {},
        _set("certs", [Certificate(("a.example.test",), START + 9 * DAY, "CA said no")]),
        _set("certs", [Certificate(("a.example.test",), START + 90 * DAY)]),
    ),
    "quota": (
        {"threshold": 80},
        _set("quota", {"acme": QuotaUse(850, 1000), "beta": QuotaUse(1, 10)}),
        _set("quota", {"acme": QuotaUse(0, 1000)}),
    ),
    "rate_limited": (
        {"threshold": 50},
        _set("traffic", {None: totals(500, s4=80, limited=80)}),
        _set("traffic", {None: totals(500, s4=3, limited=3)}),
    ),
    "no_traffic": ({}, _set("traffic", {None: totals(0)}), _set("traffic", {None: totals(5)})),
    "reload_failed": (
        {},
        _set("reload", ReloadResult(False, START, "bastion.yaml:3: sites: must not be empty")),
        _set("reload", ReloadResult(True, START + 100)),
    ),
    "store_fallback": (
        {},
        _set("store", StoreFallback(2, 17)),
        _set("store", StoreFallback(0, 40)),
    ),
}


def test_every_kind_of_the_config_is_measured() -> None:
    assert set(MEASURES) == set(RULE_KINDS) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_fires_once_and_resolves_once(kind: str) -> None:
    extra, breach, heal = KINDS[kind]
    h = Harness({"r": {"kind": kind, "channels": [], **extra}})
    assert h.state() == "INSUFFICIENT_DATA"
    assert h.step() == []
    assert h.state() == "OK"
    breach(h.figures)
    assert h.step() == [("r", "firing")]
    status = h.manager.status()[0]
    assert status["state"] == "FIRING" and status["since"] == h.clock.time()
    assert status["value"] is not None and status["summary"]
    assert h.step() == [] and h.step() == []  # still firing: nothing new to say
    heal(h.figures)
    assert h.step() == [("r", "resolved")]
    assert h.step() == [] and h.state() == "OK"


def test_error_rate_needs_min_requests_and_reads_its_route() -> None:
    h = Harness({"r": {"kind": "error_rate", "route": "api", "min_requests": 50}})
    h.figures.traffic = {None: totals(1000, s5=900), "api": totals(40, s5=40)}
    assert h.step() == [] and h.state() == "OK"  # all failed, but too few to judge
    h.figures.traffic["api"] = totals(60, s5=40)
    assert h.step() == [("r", "firing")]
    assert {route for _, _, route in h.figures.asked} == {"api"}


def test_periods_are_aligned_and_evaluated_once() -> None:
    h = Harness({"r": {"kind": "no_traffic", "period": 300}})
    h.clock.advance(298)  # START + 300 is a period end; its figures settle 2 s later
    h.manager.evaluate()
    h.manager.evaluate()
    h.clock.advance(100)
    h.manager.evaluate()
    assert h.figures.asked == [(START - 300, START, None), (START, START + 300, None)]


def test_pool_must_be_down_for_the_duration() -> None:
    h = Harness({"r": {"kind": "pool_unhealthy", "down_for": 120, "period": 30}})
    h.figures.health = {"api": PoolHealth(0, 3), "web": PoolHealth(1, 1)}
    h.manager.evaluate()  # first seen down
    assert h.step(30) == [] and h.step(30) == [] and h.step(30) == []  # 0, 30, 60, 90 s down
    assert h.step(30) == [("r", "firing")]  # 120 s
    h.figures.health["api"] = PoolHealth(1, 3)
    h.step(1)  # sampled healthy once: the count starts again
    h.figures.health["api"] = PoolHealth(0, 3)
    assert h.step(29) == [("r", "resolved")]


def test_n_of_m() -> None:
    h = Harness({"r": {"kind": "no_traffic", "evaluation_periods": 3, "datapoints_to_alarm": 2}})
    quiet, busy = {None: totals(0)}, {None: totals(9)}
    sequence = [quiet, busy, busy, quiet, busy, quiet, quiet, busy, busy, busy]
    said = []
    for traffic in sequence:
        h.figures.traffic = traffic
        said.append(h.step())
    # breaching (quiet) periods among the last 3: 1 1 1 1 1 2 2 2 1 0
    assert said == [[], [], [], [], [], [("r", "firing")], [], [], [("r", "resolved")], []]


def missing_harness(policy: str) -> Harness:
    # latency has no value without requests: the period's data is missing
    h = Harness({"r": {"kind": "latency", "threshold": 1, "missing_data": policy}})
    h.figures.traffic = {None: totals(100, p95=0.1)}
    return h


def test_missing_data_missing() -> None:
    h = missing_harness("missing")
    h.figures.traffic = {None: totals(0)}
    assert h.step() == [] and h.state() == "INSUFFICIENT_DATA"
    h.figures.traffic = {None: totals(10, p95=3.0)}
    assert h.step() == [("r", "firing")]
    h.figures.traffic = {None: totals(0)}
    assert h.step() == [] and h.state() == "INSUFFICIENT_DATA"
    h.figures.traffic = {None: totals(10, p95=3.0)}
    assert h.step() == []  # firing again: already announced, never resolved
    assert h.state() == "FIRING"
    h.figures.traffic = {None: totals(0)}
    h.step()
    h.figures.traffic = {None: totals(10, p95=0.1)}
    assert h.step() == [("r", "resolved")]


def test_missing_data_breaching_and_ok() -> None:
    h = missing_harness("breaching")
    h.figures.traffic = {None: totals(0)}
    assert h.step() == [("r", "firing")]
    h = missing_harness("ok")
    assert h.step() == []
    h.figures.traffic = {None: totals(0)}
    assert h.step() == [] and h.state() == "OK"


def test_missing_data_ignore_keeps_the_state() -> None:
    h = missing_harness("ignore")
    h.figures.traffic = {None: totals(0)}
    assert h.step() == [] and h.state() == "INSUFFICIENT_DATA"
    h.figures.traffic = {None: totals(10, p95=5.0)}
    assert h.step() == [("r", "firing")]
    h.figures.traffic = {None: totals(0)}
    assert h.step() == [] and h.step() == [] and h.state() == "FIRING"
    h.figures.traffic = {None: totals(10, p95=0.2)}
    assert h.step() == [("r", "resolved")]


def test_reconfigure_keeps_the_state_of_unchanged_rules() -> None:
    rules = {
        "same": {"kind": "no_traffic", "channels": []},
        "changed": {"kind": "no_traffic", "channels": []},
        "gone": {"kind": "no_traffic", "channels": []},
    }
    h = Harness(rules)
    h.figures.traffic = {None: totals(0)}
    assert sorted(h.step()) == [("changed", "firing"), ("gone", "firing"), ("same", "firing")]
    since = h.manager.status()[0]["since"]
    h.clock.advance(10)
    h.manager.reconfigure(
        settings(
            {
                "same": {"kind": "no_traffic", "channels": []},
                "changed": {"kind": "no_traffic", "channels": [], "evaluation_periods": 2},
                "new": {"kind": "no_traffic", "channels": []},
            }
        )
    )
    status = {s["name"]: s for s in h.manager.status()}
    assert set(status) == {"same", "changed", "new"}
    assert (status["same"]["state"], status["same"]["since"]) == ("FIRING", since)
    assert status["changed"]["state"] == "FIRING"  # its history restarts, not its incident
    assert status["new"]["state"] == "INSUFFICIENT_DATA"
    assert h.step(50) == [("new", "firing")]  # "same" and "changed" were announced already
    h.figures.traffic = {None: totals(5)}
    assert sorted(h.step()) == [("changed", "resolved"), ("new", "resolved"), ("same", "resolved")]


def test_unreadable_figures_are_missing_data_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness({"r": {"kind": "error_rate"}, "p": {"kind": "pool_unhealthy", "down_for": 0}})
    h.figures.broken = True
    h.figures.health = {"api": PoolHealth(0, 1)}
    assert h.step() == [("p", "firing")]
    assert h.state("r") == "INSUFFICIENT_DATA"
    assert "the statistics store is unreadable" in caplog.text


def test_notifications_carry_the_figures() -> None:
    h = Harness({"r": {"kind": "quota", "threshold": 90, "channels": []}})
    h.figures.quota = {"acme": QuotaUse(1000, 1000)}
    h.clock.advance(60)
    [note] = h.manager.evaluate()
    assert isinstance(note, Notification)
    assert (note.alert, note.state, note.kind, note.value, note.threshold) == (
        "r",
        "firing",
        "quota",
        100.0,
        90.0,
    )
    assert note.summary == "consumer acme used 1000 of its quota of 1000 (100%, threshold 90%)"
    assert note.time == h.clock.time()


def test_run_evaluates_and_stops_cleanly() -> None:
    h = Harness({"r": {"kind": "no_traffic", "channels": []}})

    async def main() -> None:
        task = asyncio.create_task(h.manager.run())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert h.state() == "OK"


def test_run_reads_the_statistics_off_the_loop() -> None:
    """The statistics file may be locked by another process for seconds: the running
    manager reads the periods it is about to evaluate in a thread, never on the loop."""
    import threading

    from bastion.observe.alerts.gateway import GatewayInputs

    read_on: list[bool] = []

    def period(since: float, until: float, route: str | None) -> dict[str, Any]:
        read_on.append(threading.current_thread() is threading.main_thread())
        return totals(100, s5=30)

    clock = ManualClock(START + SETTLE)
    inputs = GatewayInputs(period=period, clock=clock)
    manager = AlertManager(settings({"r": {"kind": "error_rate", "channels": []}}), inputs, clock)

    async def main() -> None:
        task = asyncio.create_task(manager.run())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert read_on == [False]  # read once, in a thread; evaluate used what it read
    assert manager.states["r"].state == "FIRING"
