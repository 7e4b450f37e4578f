"""``bastion keys create|list|revoke``: the operator's side of the API-key store."""

from __future__ import annotations

import sys

from bastion.state.files import resolve_data_dir
from bastion.state.stores import Stores

__all__ = ["run_keys"]


def run_keys(action: str, consumer: str | None, key_id: str | None, data_dir: str | None) -> int:
    store = Stores(resolve_data_dir(data_dir)).keys
    try:
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
