"""One route's upstream pool: which endpoints may take a request now, and which one does.

The usable list (healthy, not ejected, primaries before backups) is rebuilt only
when some endpoint's state changed (`endpoint.EPOCH`) or an ejection / slow-start
ramp reaches its end, never per request.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from bastion.balance.endpoint import EPOCH, Endpoint, changed
from bastion.balance.policies import Policy

if TYPE_CHECKING:
    from bastion.config.balancing import PassiveHealth
    from bastion.http.request import Request

_NEVER: Final = math.inf


class Member:
    """An endpoint as one pool sees it."""

    __slots__ = ("backup", "cookie", "current", "eff", "ep", "key", "track", "weight", "zone")

    def __init__(self, ep: Endpoint, weight: int, zone: str | None, backup: bool) -> None:
        self.ep = ep
        self.key = ep.id.encode()
        self.weight = float(weight)
        self.eff = float(weight)
        self.current = 0.0
        self.zone = zone
        self.backup = backup
        self.cookie = b""  # the Set-Cookie line naming this endpoint (sticky policy)
        # whether responses feed latency and passive health: not for a lone endpoint
        # that nothing can set aside (its latency then comes from health checks only)
        self.track = True


class Balancer:
    def __init__(
        self,
        name: str,
        members: list[Member],
        policy: Policy,
        policy_name: str,
        passive: PassiveHealth | None,
        slow_start: float,
        max_connections: int,
        max_pending: int,
        health_interval: float | None,
    ) -> None:
        self.name = name
        self.members = members
        self.policy = policy
        self.policy_name = policy_name
        # None: no passive ejection (a lone endpoint, never ejected anyway)
        self.passive_failures = passive.failures if passive is not None else 0
        self.ejection = passive.ejection if passive is not None else 0.0
        # at least one endpoint may always be ejected from a pool of two or more
        self.max_ejected = (
            max(1 if len(members) > 1 else 0, math.floor(passive.max_ejected * len(members)))
            if passive is not None
            else 0
        )
        self.slow_start = slow_start
        self.max_connections = max_connections
        self.max_pending = max_pending
        self.health_interval = health_interval
        self.usable: list[Member] = []
        self.epoch = -1
        self.next_change = _NEVER
        # the fast path: one endpoint, nothing that could ever set it aside
        self.only: Member | None = None
        if len(members) == 1 and self.max_ejected == 0:
            members[0].track = False
            if health_interval is None:
                self.only = members[0]

    # ------------------------------------------------------------------ pick
    def pick(
        self, req: Request | None, now: float, exclude: Sequence[Member] = ()
    ) -> Member | None:
        """The member for the next try, or None when no endpoint is usable."""
        only = self.only
        if only is not None:
            return None if exclude else only
        if self.epoch != EPOCH[0] or now >= self.next_change:
            self._rebuild(now)
        members = self.usable
        if exclude:
            members = [m for m in members if m not in exclude]
        if not members:
            return None
        chosen = self.policy.choose(members, req, now)
        limit = self.max_connections
        if limit and chosen.ep.inflight >= limit:
            # full: any other usable endpoint with room is better than waiting
            for m in members:
                if m.ep.inflight < limit:
                    return m
        return chosen

    def _rebuild(self, now: float) -> None:
        self.epoch = EPOCH[0]
        next_change = _NEVER
        primaries: list[Member] = []
        backups: list[Member] = []
        for m in self.members:
            ep = m.ep
            if ep.ejected_until > now:
                next_change = min(next_change, ep.ejected_until)
            if not ep.usable(now):
                continue
            ramp = now - ep.up_since
            if self.slow_start and ramp < self.slow_start:
                m.eff = m.weight * max(0.1, ramp / self.slow_start)
                next_change = min(next_change, now + min(0.5, self.slow_start / 10))
            else:
                m.eff = m.weight
            (backups if m.backup else primaries).append(m)
        self.usable = primaries or backups
        self.next_change = next_change

    def retry_after(self, now: float) -> int:
        """Seconds until an endpoint may be usable again, for Retry-After."""
        soonest = min(
            (m.ep.ejected_until - now for m in self.members if m.ep.ejected_until > now),
            default=_NEVER,
        )
        if self.health_interval is not None:
            soonest = min(soonest, self.health_interval)
        if soonest == _NEVER:
            soonest = 1.0
        return max(1, math.ceil(soonest))

    # --------------------------------------------------------------- outcomes
    def failed(self, member: Member, now: float) -> None:
        """A connect failure or a 5xx from this endpoint (outlier detection)."""
        ep = member.ep
        ep.failures += 1
        threshold = self.passive_failures
        if not threshold or ep.failures < threshold or ep.ejected_until > now:
            return
        ejected = sum(1 for m in self.members if m.ep.ejected_until > now)
        if ejected >= self.max_ejected:
            ep.failures = 0
            return
        ep.eject(now, self.ejection)
        changed()

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "policy": self.policy_name,
            "endpoints": [
                {
                    "url": m.ep.label,
                    "weight": int(m.weight),
                    "zone": m.zone,
                    "backup": m.backup,
                    **m.ep.snapshot(now),
                }
                for m in self.members
            ],
        }


class RetryBudget:
    """Retries allowed as a share of requests over a sliding 10-second window (ten
    one-second buckets), with a floor so that a quiet pool can still retry."""

    __slots__ = ("buckets", "floor", "ratio", "second")

    def __init__(self, ratio: float, floor: int = 10) -> None:
        self.ratio = ratio
        self.floor = floor
        self.buckets = [[0, 0] for _ in range(10)]  # [requests, retries]
        self.second = 0

    def _bucket(self, now: float) -> list[int]:
        second = int(now)
        if second != self.second:
            gap = min(second - self.second, 10)
            for i in range(1, gap + 1):
                bucket = self.buckets[(self.second + i) % 10]
                bucket[0] = bucket[1] = 0
            self.second = second
        return self.buckets[second % 10]

    def request(self, now: float) -> None:
        if int(now) != self.second:
            self._bucket(now)
        self.buckets[self.second % 10][0] += 1

    def try_retry(self, now: float) -> bool:
        bucket = self._bucket(now)
        requests = sum(b[0] for b in self.buckets)
        retries = sum(b[1] for b in self.buckets)
        if retries >= max(self.floor, self.ratio * requests):
            return False
        bucket[1] += 1
        return True
