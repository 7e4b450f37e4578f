"""Each consumer's quota use, for the ``quota`` alert rule: the counters of the limit store
under the keys the rate-limit policy gives the config's per-consumer quotas.

The keys are made by the policy's own ``Limit`` (``policies/ratelimit.py``), so a change of
their format is followed here. Only quotas keyed by ``consumer`` count (a client address or
a header value is not a consumer). A store that keeps its counters elsewhere than in memory
(no ``quota`` table) has no use to show: the rule then has no data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.observe.alerts.inputs import QuotaUse
from bastion.state.limits import quota_window

if TYPE_CHECKING:
    from bastion.config.models import Config
    from bastion.state.limits import AnyLimitStore

__all__ = ["consumer_quotas", "quota_prefixes"]

_CONSUMER = "c:"  # what the policy puts before a consumer's name in a store key


def quota_prefixes(config: Config) -> list[tuple[str, str, int]]:
    """``(store key prefix of a consumer, per, limit)`` of every per-consumer quota."""
    from bastion.policies.ratelimit import Limit

    found: list[tuple[str, str, int]] = []
    for site in config.sites:
        for route in site.routes:
            # the scope the route's policy is built with (policies/ratelimit.py)
            scope = ",".join(site.hosts) + " " + route.path.text
            for spec in route.quotas:
                if spec.key == "consumer":
                    found.append((Limit(scope, spec).prefix + _CONSUMER, spec.per, spec.limit))
    return found


def consumer_quotas(config: Config, store: AnyLimitStore, now: float) -> dict[str, QuotaUse]:
    """Each consumer's fullest quota in its current day or month."""
    table = getattr(store, "quota", None)
    prefixes = quota_prefixes(config)
    if not isinstance(table, dict) or not prefixes:
        return {}
    current = {per: quota_window(per, now)[0] for per in ("day", "month")}
    found: dict[str, QuotaUse] = {}
    for key, (window, count) in list(table.items()):
        for prefix, per, limit in prefixes:
            if not key.startswith(prefix) or window != current[per]:
                continue
            consumer = key[len(prefix) :]
            use = QuotaUse(count, limit)
            best = found.get(consumer)
            if best is None or use.used / use.limit > best.used / best.limit:
                found[consumer] = use
    return found
