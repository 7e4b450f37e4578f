"""``bastion keys create|list|revoke|import``: the operator's side of the API-key store
(the data dir's file, or Redis with ``state.redis``)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from bastion.state.files import resolve_data_dir
from bastion.state.stores import Stores

if TYPE_CHECKING:
    from bastion.config.state_models import State

__all__ = ["run_keys"]


def run_keys(
    action: str,
    consumer: str | None,
    key_id: str | None,
    data_dir: str | None,
    state: State | None = None,
) -> int:
    stores = Stores(resolve_data_dir(data_dir))
    stores.use_state(state)
    store = stores.keys
    try:
        if action == "import":
            return _import(stores)
        if action == "create":
            if not consumer:
                print("keys create needs --consumer NAME", file=sys.stderr)
                return 2
            key, record = store.create(consumer)
            print(key)
            print(
                f"created key {record.id} for consumer {record.consumer}; it is shown only "
                f"now (the store keeps its hash) in {store.where}",
                file=sys.stderr,
            )
            return 0
        if action == "list":
            rows = [r for r in store.records() if consumer is None or r.consumer == consumer]
            print(f"{'ID':<10} {'CONSUMER':<24} {'CREATED':<26} STATUS")
            for r in rows:
                status = f"revoked {r.revoked}" if r.revoked else "active"
                print(f"{r.id:<10} {r.consumer:<24} {r.created:<26} {status}")
            return 0
        if not consumer and not key_id:
            print("keys revoke needs --consumer NAME or --id ID", file=sys.stderr)
            return 2
        done = store.revoke(consumer, key_id)
        if not done:
            what = f"key {key_id}" if key_id else f"consumer {consumer}"
            print(f"no active key of {what}", file=sys.stderr)
            return 1
        for r in done:
            print(f"revoked key {r.id} of consumer {r.consumer}")
        return 0
    except (OSError, ValueError) as exc:
        print(f"keys {action} failed: {exc}", file=sys.stderr)
        return 1


def _import(stores: Stores) -> int:
    """Copy the data dir's ``api_keys.json`` into Redis (keys Redis holds stay as they are)."""
    from bastion.state.keys import FileKeyStore
    from bastion.state.redis_keys import RedisKeyStore

    store = stores.keys
    if not isinstance(store, RedisKeyStore):
        print(
            "keys import copies the data dir's keys into Redis: this config has no "
            "state.redis (its keys are already those of the data dir)",
            file=sys.stderr,
        )
        return 2
    source = FileKeyStore(stores.data_dir)
    if not source.path.exists():
        print(f"no key file to import: {source.path} does not exist", file=sys.stderr)
        return 1
    copied, present = store.import_records(source.records())
    print(
        f"imported {copied} keys from {source.path} into {store.where}"
        + (f"; {present} were there already and were left as they are" if present else "")
        + "; every instance uses them within a second"
    )
    return 0
