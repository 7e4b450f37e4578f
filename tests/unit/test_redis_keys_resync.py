"""A full read of the API keys that crosses an announcement: the read may have been answered
before a revocation (or a creation) was announced; what was announced meanwhile wins, so
that a revoked key is not accepted again until the next read, 30 seconds later."""

from __future__ import annotations

import json
from dataclasses import asdict

from bastion.config.state_models import State
from bastion.state.keys import KeyRecord
from bastion.state.redis_keys import RedisKeyStore, hash_key

OLD = KeyRecord("k1", "acme", hash_key("bk_old"), "2026-12-06T00:00:00Z")
NEW = KeyRecord("k2", "acme", hash_key("bk_new"), "2026-12-06T00:00:01Z")


def test_what_was_announced_during_a_read_is_applied_on_top_of_it() -> None:
    # built off a loop: a command's store, which follows nothing and connects to nothing
    store = RedisKeyStore(State.model_validate({"redis": "redis://127.0.0.1:1/0"}))
    store._replace({OLD.hash: json.dumps(asdict(OLD))})
    assert store.lookup("bk_old") == OLD
    store._during = {}  # a full read is on its way...
    revoked = KeyRecord(**{**asdict(OLD), "revoked": "2026-12-06T00:00:02Z"})
    announcement = {"records": [asdict(revoked), asdict(NEW)]}
    store._announced(json.dumps(announcement).encode())
    assert store.lookup("bk_old") is None and store.lookup("bk_new") == NEW
    # ...and its answer predates both announcements
    stale = {OLD.hash: json.dumps(asdict(OLD))}
    store._replace(stale, after=store._during)
    assert store.lookup("bk_old") is None  # stays revoked
    assert store.lookup("bk_new") == NEW  # stays created
