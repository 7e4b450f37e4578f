"""Build a route's caching handler from its config (called by plan compilation)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.cache.consumer import consumer_key
from bastion.cache.handler import CachingHandler
from bastion.cache.key import KeyRules
from bastion.cache.policy import DEFAULT_STATUSES, Rules
from bastion.cache.purge import PurgeQueue

if TYPE_CHECKING:
    from bastion.config.cache_models import Cache, RouteCache
    from bastion.config.policy_auth import Auth
    from bastion.plan.context import BuildContext
    from bastion.proxy.handler import ProxyHandler
    from bastion.state.cache import CacheStore
    from bastion.state.stores import Stores


class PlanCache:
    """One store and one purge queue per plan, shared by its cached routes (a reload
    starts with an empty cache: see `bastion.state.stores`)."""

    def __init__(self, store: CacheStore, purge: PurgeQueue) -> None:
        self.store = store
        self.purge = purge


def open_plan_cache(settings: Cache, stores: Stores) -> PlanCache:
    """The plan's response cache (``BuildContext.response_cache`` opens it once)."""
    shared = settings.redis_max_object_size if settings.store == "redis" else None
    store = stores.cache(settings.max_size, settings.max_object_size, shared)
    purge = PurgeQueue(stores.broadcast, store, [str(n) for n in settings.purge_from])
    return PlanCache(store, purge)


def caching_handler(
    proxy: ProxyHandler, config: RouteCache, ctx: BuildContext, auth: Auth | None = None
) -> CachingHandler:
    shared = ctx.response_cache
    rules = Rules(
        ttl=config.ttl,
        heuristic=config.heuristic,
        allow_authorization=config.allow_authorization,
        statuses=frozenset(config.statuses) if config.statuses is not None else DEFAULT_STATUSES,
        stale_while_revalidate=config.stale_while_revalidate,
        stale_if_error=config.stale_if_error,
    )
    query = config.key.query
    key_rules = KeyRules(query if isinstance(query, str) else frozenset(query), config.key.headers)
    return CachingHandler(
        proxy,
        shared.store,
        rules,
        key_rules,
        ctx.cache_settings.lock_timeout,
        shared.purge,
        consumer_key(auth, config.key.consumer, config.shared),
        # several workers, or instances sharing Redis: invalidations reach the others
        ctx.workers > 1 or (ctx.state is not None and ctx.state.redis is not None),
        ctx.clock,
        getattr(shared.store, "shared", None),  # the entries in Redis (store: redis)
    )
