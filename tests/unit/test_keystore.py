"""The API-key store: hashed at rest, shown once, revocation, a running reader sees changes."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bastion.clock import ManualClock
from bastion.policies.auth_keys import split_query_param, strip_query_param
from bastion.state.keys import FileKeyStore, hash_key


def test_create_lookup_revoke(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path / "data")
    key, record = store.create("alice")
    other, _ = store.create("alice")
    assert key != other and key.startswith(f"bk_{record.id}_")
    assert store.lookup(key) == record
    assert store.lookup(key + "x") is None
    text = store.path.read_text()
    assert key not in text and hash_key(key) in text
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert [r.id for r in store.revoke(key_id=record.id)] == [record.id]
    assert store.lookup(key) is None
    assert store.lookup(other) is not None
    assert store.revoke(key_id=record.id) == []  # already revoked
    assert len(store.revoke(consumer="alice")) == 1
    assert all(r.revoked for r in store.records())
    # a key id of one consumer cannot be revoked under another name
    key3, rec3 = store.create("bob")
    assert store.revoke(consumer="alice", key_id=rec3.id) == []
    assert store.lookup(key3) is not None


def test_reader_sees_other_process_changes(tmp_path: Path) -> None:
    clock = ManualClock()
    reader = FileKeyStore(tmp_path, clock)
    writer = FileKeyStore(tmp_path)
    assert reader.lookup("bk_nothing_yet") is None  # the reader has looked at the file
    key, _ = writer.create("carol")
    # what the reader answers holds until its next look at the file, a second later
    assert reader.fresh_for() == 1.0
    clock.advance(0.5)
    assert reader.lookup(key) is None and reader.fresh_for() == 0.5
    clock.advance(0.5)
    assert reader.lookup(key) is not None
    writer.revoke(consumer="carol")
    assert reader.lookup(key) is not None
    clock.advance(1.0)
    assert reader.lookup(key) is None


def test_records_are_dated_by_the_clock(tmp_path: Path) -> None:
    clock = ManualClock(datetime(2027, 1, 15, 12, 0, tzinfo=UTC).timestamp())
    store = FileKeyStore(tmp_path, clock)
    _, record = store.create("erin")
    assert record.created == "2027-01-15T12:00:00+00:00"
    clock.advance(86400.0)
    assert store.revoke(consumer="erin")[0].revoked == "2027-01-16T12:00:00+00:00"


def test_broken_file_keeps_the_keys_held(tmp_path: Path) -> None:
    clock = ManualClock()
    store = FileKeyStore(tmp_path, clock)
    key, _ = store.create("dave")
    store.path.write_text("{not json")  # (another size: the file is seen to change)
    clock.advance(1.0)
    assert store.lookup(key) is not None
    with pytest.raises(ValueError):
        store.records()


@pytest.mark.parametrize("name", ["", "a b", "-x", "x" * 65, "é", "a/b"])
def test_consumer_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="invalid consumer name"):
        FileKeyStore(tmp_path).create(name)
    assert (
        not (tmp_path / "api_keys.json").exists()
        or json.loads((tmp_path / "api_keys.json").read_text())["keys"] == []
    )


def test_strip_query_param() -> None:
    assert strip_query_param("a=1&api_key=K&b=2", "api_key") == ("a=1&b=2", "K")
    assert strip_query_param("api_key=K1&api_key=K2", "api_key") == ("", "K1")
    assert strip_query_param("api%5Fkey=K%2B", "api_key") == ("", "K+")
    assert strip_query_param("a=1", "api_key") == ("a=1", None)
    assert split_query_param("api_key=K1&a=1&api_key=K2", "api_key") == ("a=1", ["K1", "K2"])
    assert split_query_param("a=1", "api_key") == ("a=1", [])
