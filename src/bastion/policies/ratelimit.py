"""Rate limits and quotas of a route, answered with 429, Retry-After and the IETF
RateLimit-Policy / RateLimit fields (draft-ietf-httpapi-ratelimit-headers).

Everything a request needs is prepared here once per plan: the store keys' prefixes, the
periods, the constant ``RateLimit-Policy`` line. Per request: one key string per limit and one
``store.take`` for all of them (all consumed or none).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from bastion.config.policy_traffic import Quota, RateLimit, parse_rate
from bastion.http1.request import Request
from bastion.policies.base import Denied, real_client_ip
from bastion.state.limits import Check, LimitStore, Outcome, quota_window
from bastion.state.persist import PersistentStore, limit_store
from bastion.tls.store import resolve_data_dir

if TYPE_CHECKING:
    from bastion.config.models import Route, Site
    from bastion.plan import Plan

__all__ = ["LONG_WINDOW", "Limit", "RateLimitPolicy"]

LONG_WINDOW = 60.0
"""Rate limits with a period of at least this many seconds are saved across restarts."""

_PERIOD_NAMES = {1.0: "s", 60.0: "m", 3600.0: "h", 86400.0: "day"}


class Limit:
    """One configured limit, resolved: how to key it, and its check parameters."""

    __slots__ = ("advertise", "burst", "check", "count", "key", "name", "per", "period",
                 "persist", "prefix", "span")  # fmt: skip

    def __init__(self, scope: str, spec: RateLimit | Quota) -> None:
        self.key = spec.key
        self.advertise = spec.advertise
        self.span = (0.0, 0.0)  # the current calendar period of a quota
        if isinstance(spec, RateLimit):
            self.count, self.period = parse_rate(spec.rate)
            self.burst = spec.burst or self.count
            self.per: str | None = None
            self.persist = self.period >= LONG_WINDOW
            unit = _PERIOD_NAMES.get(self.period) or f"{self.period:g}s"
            self.name = spec.name or f"{_short(spec.key)}-{self.count}-per-{unit}"
            identity = f"r:{self.count}/{self.period:g}:{self.burst}:{spec.name or ''}"
        else:
            self.count, self.period, self.burst = spec.limit, 0.0, 0
            self.per = spec.per
            self.persist = True
            self.name = spec.name or f"{_short(spec.key)}-{spec.limit}-per-{spec.per}"
            # not the limit: a quota's counter is kept when its limit changes
            identity = f"q:{spec.per}:{spec.name or ''}"
        self.prefix = f"{scope}|{identity}|{spec.key}="
        self.check = Check(self.count, self.period, self.burst, self.per, self.persist)

    def window(self, now: float) -> float:
        if self.per is None:
            return self.period
        start, end = self.span
        if not start <= now < end:
            _, start, end = quota_window(self.per, now)
            self.span = (start, end)
        return end - start


def _short(key: str) -> str:
    return key.replace("header:", "h-").replace("_", "-")


class RateLimitPolicy:
    is_async = False

    def __init__(
        self,
        scope: str,
        specs: Sequence[RateLimit | Quota],
        store: LimitStore,
        trusted: Callable[[str], bool] | None,
        saver: PersistentStore | None = None,
    ) -> None:
        self.limits = [Limit(scope, spec) for spec in specs]
        self.checks = [limit.check for limit in self.limits]
        # the RateLimit fields go on every answer when any limit is advertised
        self.report = any(limit.advertise for limit in self.limits)
        self.state_prefixes = [
            f'"{limit.name}";r='.encode() if limit.advertise else None for limit in self.limits
        ]
        self.policy_line = b""
        self.policy_until = (0.0, 0.0)  # when policy_line must be built again
        self.store = store
        self.trusted = trusted
        self.saver = saver  # saves long-window counters now and then

    def keys(self, req: Request) -> list[str]:
        """The store key of each limit for this request."""
        ip = real_client_ip(req, self.trusted) if self.trusted is not None else req.client_ip
        keys = []
        for limit in self.limits:
            key = limit.key
            if key == "client_ip":
                value = ip
            elif key == "consumer":
                value = "c:" + req.consumer if req.consumer else "ip:" + ip
            elif key == "route":
                value = ""
            else:
                header = req.header(key[len("header:") :].encode())
                value = "h:" + header.decode("latin-1") if header else "ip:" + ip
            keys.append(limit.prefix + value)
        return keys

    def on_request(self, req: Request) -> Denied | None:
        now = time.time()
        allowed, outcomes = self.store.take(self.checks, self.keys(req), now, self.report)
        saver = self.saver
        if saver is not None and saver.dirty:
            saver.take_and_save(now)
        if outcomes is None:
            return None
        if allowed:
            # added to every answer of this request, whatever produces it
            req.extra_head += self.fields(outcomes, now)
            return None
        wait = max(o.retry_after for o in outcomes if not o.allowed)
        seconds = max(1, math.ceil(wait - 1e-6))
        headers = f"Retry-After: {seconds}\r\n".encode() + self.fields(outcomes, now)
        return Denied(429, f"Too many requests: try again in {seconds} s.", headers)

    def fields(self, outcomes: list[Outcome], now: float) -> bytes:
        """The RateLimit-Policy and RateLimit lines naming the advertised limits."""
        if not self.report:
            return b""
        if not self.policy_until[0] <= now < self.policy_until[1]:
            self._policy_line(now)
        state = []
        for prefix, outcome in zip(self.state_prefixes, outcomes, strict=True):
            if prefix is not None:
                left = outcome.remaining
                reset = outcome.retry_after if left == 0 else outcome.reset
                state.append(b"%s%d;t=%d" % (prefix, left, max(0, math.ceil(reset - 1e-6))))
        return b"%sRateLimit: %s\r\n" % (self.policy_line, b", ".join(state))

    def _policy_line(self, now: float) -> None:
        """RateLimit-Policy is constant but for the length of a quota's month."""
        policy = []
        start, end = float("-inf"), float("inf")
        for limit in self.limits:
            if limit.advertise:
                window = limit.window(now)
                policy.append(f'"{limit.name}";q={limit.count};w={max(1, round(window))}')
                if limit.per is not None:
                    start, end = max(start, limit.span[0]), min(end, limit.span[1])
        self.policy_line = ("RateLimit-Policy: " + ", ".join(policy) + "\r\n").encode("latin-1")
        self.policy_until = (start, end)


def build_rate_limit(route: Route, site: Site, plan: Plan) -> RateLimitPolicy | None:
    """The route's rate limits and quotas, on the process's store, or None."""
    specs: list[RateLimit | Quota] = [*route.rate_limits, *route.quotas]
    if not specs:
        return None
    store = limit_store(resolve_data_dir(plan.config.data_dir))
    scope = ",".join(site.hosts) + " " + route.path.text
    return RateLimitPolicy(scope, specs, store, plan.trusted, store)
