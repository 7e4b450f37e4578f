"""Everything persisted or shared, behind small interfaces: in-process and data-dir
backends now, Redis backends for clusters later.

| module         | interface                  | backends                                   |
| -------------- | -------------------------- | ------------------------------------------ |
| `limits`       | `LimitStore`               | `MemoryLimitStore`; `persist.PersistentStore` |
| `cache`        | `CacheStore`               | `MemoryCacheStore`                         |
| `keys`         | `KeyStore`                 | `FileKeyStore`; `redis_keys.RedisKeyStore` |
| `broadcast`    | `Broadcast`                | `FileBroadcast`, `MemoryBroadcast`;        |
|                |                            | `redis_broadcast.RedisBroadcast`           |
| `snapshots`    | `Snapshots`                | `FileSnapshots`, `MemorySnapshots`         |
| `stores`       | `Stores`: one of each per data dir and process, and what survives a reload |

Protocols (``http1``, ``http2``) never import this package; builders take their stores from
a `Stores` and hand them to the policies and the cache.
"""
