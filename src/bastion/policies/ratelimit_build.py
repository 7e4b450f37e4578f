"""The builder of a route's ``rate_limits`` and ``quotas``: the policy for the process's
limit store (`RateLimitPolicy` and its single-limit fast path on the in-process store,
`SharedRateLimitPolicy` and its single-limit fast path on Redis, whose module is imported
only then)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.policies.ratelimit import RateLimitPolicy, build_policy
from bastion.state.limits import is_shared

if TYPE_CHECKING:
    from bastion.config.policy_traffic import Quota, RateLimit
    from bastion.plan.context import BuildContext, RouteSpec

__all__ = ["build_rate_limit"]


def build_rate_limit(spec: RouteSpec, ctx: BuildContext) -> RateLimitPolicy | None:
    """The route's rate limits and quotas, on the process's store, or None."""
    route = spec.route
    specs: list[RateLimit | Quota] = [*route.rate_limits, *route.quotas]
    if not specs:
        return None
    store = ctx.limit_store
    scope = ",".join(spec.site.hosts) + " " + route.path.text
    policy: RateLimitPolicy
    if is_shared(store):
        # a shared store (Redis): awaited, with each limit's on_store_down
        from bastion.policies.shared_limits import shared_policy
        from bastion.state.redis_limits import RedisLimitStore

        assert isinstance(store, RedisLimitStore) and ctx.state is not None
        share = ctx.state.instances * ctx.workers
        policy = shared_policy(scope, specs, store, ctx.trusted, share)
        store.connection.breaker.on_change = ctx.events.store_state
        if ctx.checking is None:  # (a plan only checked talks to no server)
            store.warm()
    else:
        policy = build_policy(scope, specs, store, ctx.trusted, store)
    policy.events = ctx.events  # its refusals are counted (`policies/chain.py`)
    return policy
