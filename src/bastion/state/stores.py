"""`Stores`: one backend of each kind of shared state, for a data dir and a clock.

Built once per process and data dir (`stores_for`) and kept for the process's life: a
Plan is compiled again on every reload, the Stores are not, so what they hold outlives the
plan. What survives a reload and a restart:

| state                               | reload              | restart                    |
| ----------------------------------- | ------------------- | -------------------------- |
| rate limits under a minute          | kept (in memory)    | lost                       |
| rate limits of a minute or more,    | kept                | kept (``ratelimit.json``,  |
| quotas                              |                     | saved every few seconds)   |
| API keys                            | kept                | kept (``api_keys.json``,   |
|                                     |                     | or Redis)                  |
| purge messages (broadcast)          | kept (60 s)         | kept (60 s, files; Redis:  |
|                                     |                     | none, pub/sub)             |
| status snapshots                    | kept (rewritten)    | rewritten by the new worker|
| response cache                      | emptied (new plan)  | emptied                    |

With ``state.redis``, rate limits and quotas live in Redis instead: kept across reloads
and restarts alike, and nothing is written to ``ratelimit.json``. With ``cache.store:
redis`` too, each plan's in-memory cache is still new and empty, but the entries in Redis
behind it (`RedisCacheShelf`, one per settings) outlive reloads and restarts.

The response cache is the one exception: its entries were answered under the old routes
(backends, TTLs, key rules), so each plan gets an empty store from `Stores.cache`. Each
backend is made on first use: a gateway without API keys never reads ``api_keys.json``.

A cluster backend (Redis) is a module of this package implementing the protocols, and a
branch here that picks it; builders only ever see the protocols. With ``state.redis``
(`use_state`, told by the plan's `BuildContext`) the limits are `RedisLimitStore`'s, one per
``state`` settings (a reload that keeps them keeps the store and its connection); without
it, the in-process store. The API keys (`RedisKeyStore`) and the broadcast (`RedisBroadcast`)
go to Redis the same way, chosen at their first use. redis-py is imported only then.
"""

from __future__ import annotations

import atexit
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from bastion.clock import SYSTEM_CLOCK, Clock
from bastion.config.plain import fingerprint

if TYPE_CHECKING:
    from bastion.config.state_models import State
    from bastion.state.broadcast import Broadcast
    from bastion.state.cache import CacheStore
    from bastion.state.certs import CertStore
    from bastion.state.challenges import ChallengeTokens
    from bastion.state.keys import KeyStore
    from bastion.state.limits import AnyLimitStore, LimitStore, SharedLimitStore
    from bastion.state.redis_cache import RedisCacheShelf
    from bastion.state.snapshots import Snapshots

__all__ = ["Stores", "stores_for"]


class Stores:
    """The state backends of one data dir."""

    def __init__(self, data_dir: Path, clock: Clock = SYSTEM_CLOCK) -> None:
        self.data_dir = data_dir
        self.clock = clock
        self.state: State | None = None  # the config's `state` section (`use_state`)
        self.shared_limits: dict[str, SharedLimitStore] = {}  # by the state settings
        self.shared_certs: dict[tuple[str, str, str], CertStore] = {}  # by settings, CA
        self.shared_challenges: dict[tuple[str, str], ChallengeTokens] = {}
        self.shared_caches: dict[tuple[str, int], RedisCacheShelf] = {}  # by settings, cap

    def use_state(self, state: State | None) -> None:
        """Share what the config's ``state`` section says (the plan being compiled's)."""
        self.state = state

    @property
    def limits(self) -> AnyLimitStore:
        """Rate-limit and quota counters: in Redis with ``state.redis``, else in process."""
        state = self.state
        if state is None or state.redis is None:
            return self.local_limits
        settings = fingerprint(state)
        store = self.shared_limits.get(settings)
        if store is None:
            from bastion.state.redis_limits import RedisLimitStore

            store = RedisLimitStore(state, self.clock)
            self.shared_limits[settings] = store
        return store

    @cached_property
    def local_limits(self) -> LimitStore:
        """Rate-limit and quota counters in this process (GCRA TATs, calendar counts)."""
        # each backend is imported with its first use: a gateway pays, in memory, only
        # for the kinds of state its config uses
        from bastion.state.persist import PersistentStore

        return PersistentStore(self.data_dir, clock=self.clock)

    @cached_property
    def keys(self) -> KeyStore:
        """API keys: lookups for the policy, create/revoke for ``bastion keys``; in Redis
        with ``state.redis`` (the settings in use at first use: a change needs a restart)."""
        state = self.state
        if state is not None and state.redis is not None:
            from bastion.state.redis_keys import RedisKeyStore

            return RedisKeyStore(state, self.clock, self.data_dir)
        from bastion.state.keys import FileKeyStore

        return FileKeyStore(self.data_dir, self.clock)

    @cached_property
    def broadcast(self) -> Broadcast:
        """Messages to every worker: cache purges and invalidations, reloads; over Redis
        pub/sub with ``state.redis`` (every instance), else files (this machine)."""
        state = self.state
        if state is not None and state.redis is not None:
            from bastion.state.redis_broadcast import RedisBroadcast

            return RedisBroadcast(state)
        from bastion.state.broadcast import FileBroadcast

        return FileBroadcast(self.data_dir, self.clock)

    @cached_property
    def snapshots(self) -> Snapshots:
        """Each worker's latest snapshot: pool status for ``bastion status``."""
        from bastion.state.snapshots import FileSnapshots

        return FileSnapshots(self.data_dir)

    def cert_store(self, state: State | None, directory: str) -> CertStore:
        """ACME account, certificates and issuance locks for the CA at ``directory``: in
        Redis with ``state.redis`` (with a local copy in the data dir), else the data dir's
        files. One store per settings and CA, kept for the process's life."""
        from bastion.state.certs import FileCertStore

        local = FileCertStore(self.data_dir, directory)
        if state is None or state.redis is None:
            return local
        secret = state.encryption_key.get_secret_value() if state.encryption_key else ""
        settings = (fingerprint(state), secret, directory)
        store = self.shared_certs.get(settings)
        if store is None:
            from bastion.state.redis_certs import RedisCertStore

            store = self.shared_certs[settings] = RedisCertStore(state, local)
        return store

    def challenges(self, state: State | None) -> ChallengeTokens:
        """ACME challenge answers (HTTP-01 tokens, TLS-ALPN-01 certificates): in Redis
        with ``state.redis`` (any instance answers the CA), else in the data dir's files
        (any worker of this machine answers)."""
        from bastion.state.challenges import FileChallengeTokens

        local = FileChallengeTokens(self.data_dir)
        if state is None or state.redis is None:
            return local
        settings = (fingerprint(state), str(self.data_dir))
        tokens = self.shared_challenges.get(settings)
        if tokens is None:
            from bastion.state.redis_challenges import RedisChallengeTokens

            tokens = self.shared_challenges[settings] = RedisChallengeTokens(state, local)
        return tokens

    def cache(
        self, max_size: int, max_object_size: int, shared_max_object_size: int | None = None
    ) -> CacheStore:
        """A new, empty response cache for a plan (see the table above); with
        ``shared_max_object_size`` and ``state.redis``, one that also shares its entries
        (bodies up to that size) in Redis, where they outlive the plan."""
        state = self.state
        if shared_max_object_size is not None and state is not None and state.redis is not None:
            from bastion.state.redis_cache import RedisCacheShelf, TieredCacheStore

            settings = (fingerprint(state), shared_max_object_size)
            shelf = self.shared_caches.get(settings)
            if shelf is None:
                shelf = self.shared_caches[settings] = RedisCacheShelf(
                    state, shared_max_object_size
                )
            return TieredCacheStore(max_size, max_object_size, shelf)
        from bastion.state.cache import MemoryCacheStore

        return MemoryCacheStore(max_size, max_object_size)

    def close(self) -> None:
        """Save what is not saved yet (at exit)."""
        limits = self.__dict__.get("local_limits")  # (not made just to be closed)
        if limits is not None:
            limits.close()


_BY_DIR: dict[tuple[Path, Clock], Stores] = {}


def stores_for(data_dir: Path, clock: Clock = SYSTEM_CLOCK) -> Stores:
    """This process's Stores for ``data_dir`` on ``clock``, made on first use (a test that
    compiles a plan on a manual clock gets stores of its own)."""
    stores = _BY_DIR.get((data_dir, clock))
    if stores is None:
        stores = _BY_DIR[(data_dir, clock)] = Stores(data_dir, clock)
    return stores


@atexit.register
def _close_all() -> None:
    for stores in _BY_DIR.values():
        stores.close()
