"""One datapoint per rule and period: the value its kind measures, whether it breaches, and a
sentence for the notification. A value of None is missing data (the rule's ``missing_data``
policy decides what it counts as).

Each kind is one small function in ``MEASURES`` (a name -> function table that
``tests/unit/test_alert_rules.py`` checks against the config's kinds).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bastion.observe.alerts.inputs import AlertInputs

if TYPE_CHECKING:
    from bastion.config.alert_models import AlertRule

__all__ = ["MEASURES", "Datapoint", "Period", "PoolWatch", "measure"]

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Datapoint:
    value: float | None
    """None: no data in this period."""
    breaching: bool
    summary: str

    @property
    def missing(self) -> bool:
        return self.value is None


@dataclass(frozen=True, slots=True)
class Period:
    """The period a datapoint covers, [since, until), and when it is measured."""

    since: float
    until: float
    now: float


class PoolWatch:
    """Since when each pool has had no healthy endpoint, from samples taken once a second
    (the evaluation of a period alone would see only its last instant)."""

    def __init__(self) -> None:
        self.down_since: dict[str, float] = {}
        self.sizes: dict[str, int] = {}

    def sample(self, inputs: AlertInputs, now: float) -> None:
        pools = inputs.pools()
        self.sizes = {name: health.total for name, health in pools.items()}
        for name, health in pools.items():
            if health.total > 0 and health.healthy == 0:
                self.down_since.setdefault(name, now)
            else:
                self.down_since.pop(name, None)
        for gone in [name for name in self.down_since if name not in pools]:
            del self.down_since[gone]


def _where(rule: AlertRule) -> str:
    return f" on route {rule.route}" if rule.route else ""


class NoStatistics(LookupError):
    """The gateway keeps no traffic statistics: a traffic rule's periods are missing data."""


def _traffic(rule: AlertRule, inputs: AlertInputs, period: Period) -> dict[str, Any]:
    totals = inputs.period(period.since, period.until, rule.route)
    if "requests" not in totals:
        raise NoStatistics
    return totals


def _error_rate(rule: AlertRule, inputs: AlertInputs, period: Period, _: PoolWatch) -> Datapoint:
    totals = _traffic(rule, inputs, period)
    requests = int(totals.get("requests") or 0)
    if requests == 0:
        return Datapoint(None, False, f"no requests{_where(rule)}")
    errors = int((totals.get("status") or {}).get(rule.status_class) or 0)
    share = errors / requests
    limit = rule.threshold or 0.0
    summary = (
        f"{share:.1%} of {requests} requests{_where(rule)} answered {rule.status_class} "
        f"(threshold {limit:.1%})"
    )
    # too few requests to judge: a datapoint that does not breach, not missing data
    return Datapoint(share, requests >= rule.min_requests and share > limit, summary)


def _latency(rule: AlertRule, inputs: AlertInputs, period: Period, _: PoolWatch) -> Datapoint:
    totals = _traffic(rule, inputs, period)
    figures = totals.get("latency" if rule.of == "total" else "upstream_latency") or {}
    value = figures.get(rule.percentile)
    what = "latency" if rule.of == "total" else "upstream latency"
    if value is None:
        return Datapoint(None, False, f"no {what} measured{_where(rule)}")
    limit = rule.threshold or 0.0
    summary = (
        f"{rule.percentile} {what}{_where(rule)} {value * 1000:.0f} ms "
        f"(threshold {limit * 1000:.0f} ms)"
    )
    return Datapoint(float(value), value > limit, summary)


def _pool_unhealthy(
    rule: AlertRule, inputs: AlertInputs, period: Period, watch: PoolWatch
) -> Datapoint:
    pools = [rule.pool] if rule.pool else sorted(watch.sizes)
    if not any(name in watch.sizes for name in pools):
        what = f"pool {rule.pool}" if rule.pool else "upstream pools"
        return Datapoint(None, False, f"no {what} configured")
    down = [
        name
        for name in pools
        if name in watch.down_since and period.now - watch.down_since[name] >= rule.down_for
    ]
    if down:
        summary = f"no healthy endpoint in pool {', '.join(down)} for {rule.down_for:.0f} s or more"
    else:
        summary = "every watched pool has a healthy endpoint"
    return Datapoint(float(len(down)), bool(down), summary)


def _certificate_expiry(
    rule: AlertRule, inputs: AlertInputs, period: Period, _: PoolWatch
) -> Datapoint:
    certificates = inputs.certificates()
    if not certificates:
        return Datapoint(None, False, "no certificate served")
    dated = [c for c in certificates if c.not_after is not None]
    if not dated:
        return Datapoint(None, False, "no certificate with a known expiry")
    first = min(dated, key=lambda c: c.not_after or 0.0)
    days = ((first.not_after or 0.0) - period.now) / DAY
    summary = f"certificate for {', '.join(first.names)} expires in {days:.1f} days"
    if days <= 0:
        summary = f"certificate for {', '.join(first.names)} has expired"
    return Datapoint(days, days < rule.days, summary)


def _renewal_failed(
    rule: AlertRule, inputs: AlertInputs, period: Period, _: PoolWatch
) -> Datapoint:
    certificates = inputs.certificates()
    if not certificates:
        return Datapoint(None, False, "no certificate served")
    failed = [c for c in certificates if c.renewal_error]
    if not failed:
        return Datapoint(0.0, False, "no failed renewal")
    summary = f"renewal of {', '.join(failed[0].names)} failed: {failed[0].renewal_error}"
    if len(failed) > 1:
        summary += f" (and {len(failed) - 1} more)"
    return Datapoint(float(len(failed)), True, summary)


def _quota(rule: AlertRule, inputs: AlertInputs, period: Period, _: PoolWatch) -> Datapoint:
    uses = inputs.quotas()
    if rule.consumer is not None:
        uses = {k: v for k, v in uses.items() if k == rule.consumer}
    uses = {k: v for k, v in uses.items() if v.limit > 0}
    if not uses:
        who = f"consumer {rule.consumer}" if rule.consumer else "any consumer"
        return Datapoint(None, False, f"no quota use of {who}")
    consumer, use = max(uses.items(), key=lambda item: item[1].used / item[1].limit)
    percent = 100.0 * use.used / use.limit
    limit = rule.threshold or 0.0
    summary = (
        f"consumer {consumer} used {use.used} of its quota of {use.limit} ({percent:.0f}%, "
        f"threshold {limit:.0f}%)"
    )
    return Datapoint(percent, percent >= limit, summary)


def _rate_limited(rule: AlertRule, inputs: AlertInputs, period: Period, _: PoolWatch) -> Datapoint:
    totals = _traffic(rule, inputs, period)
    requests = int(totals.get("requests") or 0)
    limited = int((totals.get("refusals") or {}).get("429") or 0)
    breaching = rule.threshold is not None and limited > rule.threshold
    if rule.share is not None and requests >= rule.min_requests:
        breaching = breaching or limited / requests > rule.share
    share = f" ({limited / requests:.1%} of {requests})" if requests else ""
    summary = f"{limited} requests{_where(rule)} answered 429{share}"
    return Datapoint(float(limited), breaching, summary)


def _no_traffic(rule: AlertRule, inputs: AlertInputs, period: Period, _: PoolWatch) -> Datapoint:
    requests = int(_traffic(rule, inputs, period).get("requests") or 0)
    length = period.until - period.since
    if requests:
        return Datapoint(float(requests), False, f"{requests} requests{_where(rule)}")
    return Datapoint(0.0, True, f"no request at all{_where(rule)} in {length:.0f} s")


def _reload_failed(rule: AlertRule, inputs: AlertInputs, period: Period, _: PoolWatch) -> Datapoint:
    result = inputs.last_reload()
    if result is None:
        return Datapoint(0.0, False, "no reload since the start")
    if result.ok:
        return Datapoint(0.0, False, "the last reload was applied")
    # the first line only: a config error lists every problem, the log has them all
    reason = (result.error or "see the log").splitlines()[0]
    return Datapoint(1.0, True, f"the last reload was rejected: {reason}")


Measure = Callable[["AlertRule", AlertInputs, Period, PoolWatch], Datapoint]


def _store_fallback(
    rule: AlertRule, inputs: AlertInputs, period: Period, _: PoolWatch
) -> Datapoint:
    state = inputs.store_fallback()
    if state is None:
        return Datapoint(None, False, "no shared limit store (state.redis is not set)")
    if state.unavailable == 0:
        return Datapoint(0.0, False, "the shared limit store (Redis) answers")
    workers = "1 worker" if state.unavailable == 1 else f"{state.unavailable} workers"
    return Datapoint(
        float(state.unavailable),
        True,
        f"the shared limit store (Redis) is unavailable to {workers}: rate limits and quotas "
        f"apply on_store_down ({state.fallbacks} requests decided so since the start)",
    )


# the kinds that read the statistics (`AlertInputs.period`)
TRAFFIC_KINDS = frozenset(("error_rate", "latency", "rate_limited", "no_traffic"))

MEASURES: dict[str, Measure] = {
    "error_rate": _error_rate,
    "latency": _latency,
    "pool_unhealthy": _pool_unhealthy,
    "certificate_expiry": _certificate_expiry,
    "renewal_failed": _renewal_failed,
    "quota": _quota,
    "rate_limited": _rate_limited,
    "no_traffic": _no_traffic,
    "reload_failed": _reload_failed,
    "store_fallback": _store_fallback,
}


def measure(rule: AlertRule, inputs: AlertInputs, period: Period, watch: PoolWatch) -> Datapoint:
    try:
        point = MEASURES[rule.kind](rule, inputs, period, watch)
    except NoStatistics:
        return Datapoint(None, False, "no traffic statistics (stats are off)")
    if point.value is not None and not math.isfinite(point.value):
        return Datapoint(None, False, point.summary)
    return point


def threshold_of(rule: AlertRule) -> float | None:
    """The figure a rule's value is compared with, as status() shows it."""
    if rule.kind == "certificate_expiry":
        return rule.days
    if rule.kind == "pool_unhealthy":
        return rule.down_for
    if rule.kind == "rate_limited":
        return rule.threshold if rule.threshold is not None else rule.share
    if rule.kind in ("renewal_failed", "reload_failed", "store_fallback"):
        return 0.0
    if rule.kind == "no_traffic":
        return 0.0
    return rule.threshold
