"""How long an entry is kept in Redis, and that an entry read back from its hash is the
entry that was written (pure logic: no server)."""

from __future__ import annotations

from bastion.state.cache import Entry
from bastion.state.redis_cache import REVALIDATE_MIN, _entry, _fields, shared_ttl


def entry(**kw: object) -> Entry:
    args: dict[str, object] = {
        "key": "http://h/p\x1dfr",
        "url": "http://h/p",
        "status": 200,
        "head": b"HTTP/1.1 200 OK\r\nVary: Accept-Language\r\n",
        "body": b"bonjour",
        "stored_at": 1000.0,
        "lifetime": 60.0,
    }
    args.update(kw)
    return Entry(**args)  # type: ignore[arg-type]


def test_a_fresh_entry_is_kept_for_what_is_left_of_its_freshness() -> None:
    assert shared_ttl(entry(), 1000.0) == 60
    assert shared_ttl(entry(initial_age=20.0), 1010.0) == 30


def test_the_stale_windows_add_the_longer_of_the_two() -> None:
    assert shared_ttl(entry(stale_while_revalidate=10.0, stale_if_error=300.0), 1000.0) == 360


def test_a_validator_keeps_it_longer_to_be_revalidated() -> None:
    assert shared_ttl(entry(etag=b'"v1"'), 1000.0) == 60 + 60
    assert shared_ttl(entry(lifetime=5.0, last_modified=b"x"), 1000.0) == 5 + REVALIDATE_MIN


def test_an_entry_with_nothing_left_is_not_written() -> None:
    assert shared_ttl(entry(), 1060.0) == 0
    assert shared_ttl(entry(), 2000.0) == 0


def test_an_entry_reads_back_as_written() -> None:
    written = entry(
        etag=b'"v1"',
        tags=frozenset({"blue", "green"}),
        meta=b'ETag: "v1"\r\n',
        headers=[(b"Vary", b"Accept-Language"), (b"X-Empty", b"")],
        vary=("accept-language",),
        stale_if_error=30.0,
    )
    raw = {k.encode(): v for k, v in _fields(written).items()}
    read = _entry(raw, written.key)
    assert read is not None
    for name in Entry.__slots__:
        assert getattr(read, name) == getattr(written, name), name


def test_a_hash_of_another_key_or_cut_short_is_a_miss() -> None:
    raw = {k.encode(): v for k, v in _fields(entry()).items()}
    assert _entry(raw, "http://h/other") is None
    del raw[b"b"]
    assert _entry(raw, "http://h/p\x1dfr") is None
