"""Build a route's caching handler from its config (called by plan compilation)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bastion.cache.consumer import consumer_key
from bastion.cache.handler import CachingHandler
from bastion.cache.key import KeyRules
from bastion.cache.policy import DEFAULT_STATUSES, Rules
from bastion.cache.purge import PurgeQueue
from bastion.clock import SYSTEM_CLOCK, Clock
from bastion.state.files import resolve_data_dir
from bastion.state.stores import stores_for

if TYPE_CHECKING:
    from bastion.config.cache_models import RouteCache
    from bastion.config.policy_auth import Auth
    from bastion.proxy.handler import ProxyHandler
    from bastion.state.cache import CacheStore


class PlanCache:
    """One store and one purge queue per plan, shared by its cached routes (a reload
    starts with an empty cache: see `bastion.state.stores`)."""

    def __init__(self, store: CacheStore, purge: PurgeQueue) -> None:
        self.store = store
        self.purge = purge


def plan_cache(plan: Any) -> PlanCache:
    if plan.cache is None:
        settings = plan.config.cache
        stores = stores_for(resolve_data_dir(plan.config.data_dir))
        store = stores.cache(settings.max_size, settings.max_object_size)
        purge = PurgeQueue(stores.broadcast, store, [str(n) for n in settings.purge_from])
        plan.cache = PlanCache(store, purge)
    cache: PlanCache = plan.cache
    return cache


def caching_handler(
    proxy: ProxyHandler,
    config: RouteCache,
    plan: Any,
    auth: Auth | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> CachingHandler:
    shared = plan_cache(plan)
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
        plan.config.cache.lock_timeout,
        shared.purge,
        consumer_key(auth, config.key.consumer, config.shared),
        plan.config.workers > 1,
        clock,
    )
