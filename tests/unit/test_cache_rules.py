"""RFC 9111 shared-cache rules as a table: response headers → stored? fresh for how long?"""

from __future__ import annotations

import pytest

from bastion.cache.key import normalise_query
from bastion.cache.policy import Rules, decide
from bastion.state.cache import Entry, MemoryCacheStore

NOW = 1_700_000_000.0
DATE = "Tue, 14 Nov 2023 22:13:20 GMT"  # == NOW
IN_HOUR = "Tue, 14 Nov 2023 23:13:20 GMT"
DAY_AGO = "Mon, 13 Nov 2023 22:13:20 GMT"
FOLLOW = Rules()

# (method, status, response headers, rules, authorized) → (store?, lifetime or reason)
TABLE = [
    ("GET", 200, {"cache-control": "max-age=60"}, FOLLOW, False, (True, 60.0)),
    ("GET", 200, {"cache-control": "s-maxage=10, max-age=60"}, FOLLOW, False, (True, 10.0)),
    ("GET", 200, {"cache-control": "max-age=0"}, FOLLOW, False, (True, 0.0)),
    ("GET", 200, {"expires": IN_HOUR, "date": DATE}, FOLLOW, False, (True, 3600.0)),
    ("GET", 200, {"expires": IN_HOUR, "cache-control": "max-age=5"}, FOLLOW, False, (True, 5.0)),
    ("GET", 200, {"expires": "0", "date": DATE}, FOLLOW, False, (True, 0.0)),
    ("GET", 200, {"cache-control": "no-store, max-age=60"}, FOLLOW, False, (False, "no-store")),
    ("GET", 200, {"cache-control": "private, max-age=60"}, FOLLOW, False, (False, "private")),
    ("GET", 200, {"cache-control": "max-age=60", "set-cookie": "a=b"}, FOLLOW, False,
     (False, "set-cookie")),
    ("GET", 200, {"cache-control": "max-age=60", "vary": "Accept, *"}, FOLLOW, False,
     (False, "vary-star")),
    ("GET", 200, {"cache-control": "no-cache"}, FOLLOW, False, (False, "no-cache")),
    ("GET", 200, {"cache-control": "no-cache", "etag": '"a"'}, FOLLOW, False, (True, 0.0)),
    ("GET", 200, {"cache-control": "no-cache, max-age=60", "etag": '"a"'}, FOLLOW, False,
     (True, 0.0)),
    ("GET", 200, {"last-modified": DAY_AGO, "date": DATE}, FOLLOW, False, (False, "no-freshness")),
    ("GET", 200, {"last-modified": DAY_AGO, "date": DATE}, Rules(heuristic=True), False,
     (True, 8640.0)),
    ("GET", 200, {}, FOLLOW, False, (False, "no-freshness")),
    ("GET", 200, {}, Rules(ttl=300), False, (True, 300.0)),
    ("GET", 200, {"cache-control": "no-cache, max-age=1"}, Rules(ttl=300), False, (True, 300.0)),
    ("GET", 200, {"cache-control": "no-store"}, Rules(ttl=300), False, (False, "no-store")),
    ("POST", 200, {"cache-control": "max-age=60"}, FOLLOW, False, (False, "method")),
    ("HEAD", 200, {"cache-control": "max-age=60"}, FOLLOW, False, (False, "method")),
    ("GET", 206, {"cache-control": "max-age=60"}, FOLLOW, False, (False, "status")),
    ("GET", 500, {"cache-control": "max-age=60"}, FOLLOW, False, (False, "status")),
    ("GET", 404, {"cache-control": "max-age=60"}, FOLLOW, False, (True, 60.0)),
    ("GET", 302, {"cache-control": "max-age=60"}, Rules(statuses=frozenset({200, 302})), False,
     (True, 60.0)),
    ("GET", 200, {"cache-control": "max-age=60"}, FOLLOW, True, (False, "authorization")),
    ("GET", 200, {"cache-control": "public, max-age=60"}, FOLLOW, True, (True, 60.0)),
    ("GET", 200, {"cache-control": "s-maxage=60"}, FOLLOW, True, (True, 60.0)),
    ("GET", 200, {"cache-control": "max-age=60"}, Rules(allow_authorization=True), True,
     (True, 60.0)),
]  # fmt: skip


@pytest.mark.parametrize(("method", "status", "headers", "rules", "auth", "expected"), TABLE)
def test_decision_table(
    method: str,
    status: int,
    headers: dict[str, str],
    rules: Rules,
    auth: bool,
    expected: tuple[bool, float | str],
) -> None:
    decision = decide(method, status, headers, rules, auth, NOW)
    store, detail = expected
    assert decision.store is store, decision
    if store:
        assert decision.lifetime == pytest.approx(detail)
    else:
        assert decision.reason == detail


def test_stale_windows_from_response_or_route() -> None:
    route = Rules(stale_while_revalidate=30, stale_if_error=600)
    own = decide("GET", 200, {"cache-control": "max-age=1, stale-while-revalidate=5"}, route)
    assert (own.stale_while_revalidate, own.stale_if_error) == (5.0, 600.0)
    strict = decide("GET", 200, {"cache-control": "max-age=1, must-revalidate"}, route)
    assert (strict.stale_while_revalidate, strict.stale_if_error) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("query", "mode", "expected"),
    [
        ("b=2&a=1", "all", "a=1&b=2"),
        ("a=%41&b", "all", "a=A&b"),
        ("a=1&utm=x", frozenset({"a"}), "a=1"),
        ("a=1", "ignore", ""),
        ("q=a+b", "all", "q=a%20b"),
    ],
)
def test_query_normalisation(query: str, mode: str | frozenset[str], expected: str) -> None:
    assert normalise_query(query, mode) == expected


def entry(key: str, size: int, tags: frozenset[str] = frozenset()) -> Entry:
    return Entry(
        key, "http://h" + key, 200, b"HTTP/1.1 200 OK\r\n", b"x" * size, NOW, 60, tags=tags
    )


def test_memory_store_bounded_lru() -> None:
    store = MemoryCacheStore(max_size=100_000, max_object_size=50_000)
    for i in range(100):  # ten times the bound
        store.put(entry(f"/{i}", 10_000))
        assert store.size <= 100_000
    assert store.get("/0") is None and store.get("/99") is not None
    store.get("/92")  # used recently: survives the next insertions
    for i in range(100, 108):
        store.put(entry(f"/{i}", 10_000))
    assert store.get("/92") is not None and store.get("/93") is None
    store.put(entry("/huge", 60_000))  # over max_object_size: not stored
    assert store.get("/huge") is None


def test_memory_store_purges() -> None:
    store = MemoryCacheStore(10**6, 10**5)
    store.put(entry("/a/1", 10, frozenset({"red"})))
    store.put(entry("/a/2", 10, frozenset({"red", "blue"})))
    store.put(entry("/b/1", 10))
    assert store.purge_tag("red") == 2
    assert store.by_tag == {}
    assert store.purge_prefix("/b/") == 1
    store.put(entry("/c", 10))
    assert store.purge_url("http://h/c") == 1
    assert len(store) == 0 and store.size == 0


def test_vary_names_forgotten_with_the_last_variant() -> None:
    store = MemoryCacheStore(10**6, 10**5)
    for lang in ("fr", "de"):
        e = Entry(f"http://h/v\x1d{lang}", "http://h/v", 200, b"", b"x", NOW, 60,
                  vary=("accept-language",))  # fmt: skip
        store.put(e)
    assert store.vary == {"http://h/v": ("accept-language",)}
    store.purge_url("http://h/v")
    assert store.vary == {} and store.variants == {}
