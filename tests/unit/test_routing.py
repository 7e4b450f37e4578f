"""The routing tables and the request-target helpers, called directly."""

from __future__ import annotations

import pytest

import bastion.routing as routing
from bastion.routing import HostTable, PathTable, host_of, parse_host


# ------------------------------------------------------------------ HostTable
def hosts(*patterns: str) -> HostTable[str]:
    table: HostTable[str] = HostTable()
    for pattern in patterns:
        table.add(pattern, pattern)
    return table


@pytest.mark.parametrize(
    ("host", "site"),
    [
        ("www.example.test", "www.example.test"),  # exact before wildcard
        ("api.example.test", "*.example.test"),
        ("a.b.example.test", "*.b.example.test"),  # longest wildcard suffix first
        ("b.example.test", "*.example.test"),
        ("x.y.example.test", "*.example.test"),
        ("example.test", "*"),  # "*.example.test" needs a label before the dot
        ("other.test", "*"),
        ("::1", "[::1]"),
        ("127.0.0.1", "127.0.0.1"),
    ],
)
def test_host_precedence(host: str, site: str) -> None:
    table = hosts(
        "*", "*.example.test", "www.example.test", "*.b.example.test", "[::1]", "127.0.0.1"
    )
    assert table.lookup(host) == site


def test_host_patterns_are_case_insensitive() -> None:
    assert hosts("WWW.Example.TEST").lookup("www.example.test") == "WWW.Example.TEST"
    assert hosts("*.Example.TEST").lookup("a.example.test") == "*.Example.TEST"


def test_host_without_fallback_is_none() -> None:
    table = hosts("www.example.test", "*.example.test")
    assert table.lookup("other.test") is None
    assert table.lookup("example.test") is None
    assert table.lookup("") is None
    assert table.lookup(".example.test") is None


def test_last_site_for_a_host_pattern_wins_and_others_stay() -> None:
    table: HostTable[int] = HostTable()
    table.add("a.test", 1)
    table.add("*", 2)
    table.add("a.test", 3)
    assert table.lookup("a.test") == 3
    assert table.lookup("b.test") == 2


# ------------------------------------------------------------------ PathTable
def paths() -> PathTable[str]:
    table: PathTable[str] = PathTable()
    for kind, value in [
        ("regex", "^/a/"),  # listed first, still only used when nothing else matches
        ("regex", "^/v[0-9]+/"),
        ("regex", "[.]json$"),
        ("prefix", "/a/"),
        ("prefix", "/a/b"),
        ("prefix", "/static"),
        ("exact", "/a/b"),
        ("exact", "/"),
    ]:
        table.add(kind, value, f"{kind}:{value}")
    return table


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/a/b", "exact:/a/b"),
        ("/a/bc", "prefix:/a/b"),
        ("/a/b/c", "prefix:/a/b"),
        ("/a/", "prefix:/a/"),
        ("/a/x.json", "prefix:/a/"),  # a prefix beats any regex
        ("/v1/x", "regex:^/v[0-9]+/"),
        ("/x/y.json", "regex:[.]json$"),
        ("/static", "prefix:/static"),
        ("/staticfiles/x", "prefix:/static"),  # a prefix is a string prefix
        ("/", "exact:/"),
        ("/a", None),
        ("/v/x", None),
        ("/nothing", None),
    ],
)
def test_path_precedence(path: str, route: str | None) -> None:
    found = paths().match(path)
    assert (found[0] if found else None) == route


def test_regexes_are_tried_in_file_order() -> None:
    table: PathTable[str] = PathTable()
    table.add("regex", "^/x", "first")
    table.add("regex", "^/x/y", "second")
    assert table.match("/x/y") == ["first"]


def test_routes_sharing_a_path_are_grouped() -> None:
    table: PathTable[str] = PathTable()
    table.add("prefix", "/m/", "get")
    table.add("prefix", "/m/", "post")
    table.add("exact", "/e", "one")
    table.add("exact", "/e", "two")
    table.add("regex", "^/r", "r1")
    table.add("regex", "^/r", "r2")
    assert table.match("/m/x") == ["get", "post"]
    assert table.match("/e") == ["one", "two"]
    assert table.match("/r") == ["r1", "r2"]
    assert sorted(table.values()) == ["get", "one", "post", "r1", "r2", "two"]


def test_empty_table_matches_nothing() -> None:
    assert PathTable[str]().match("/") is None


# ------------------------------------------------------------------ parse_host
@pytest.mark.parametrize(
    ("value", "host"),
    [
        ("example.test", "example.test"),
        ("Example.TEST", "example.test"),
        ("example.test:8080", "example.test"),
        ("example.test:", "example.test"),  # an empty port is allowed (RFC 3986)
        ("127.0.0.1:80", "127.0.0.1"),
        ("[::1]", "::1"),
        ("[::1]:8443", "::1"),
        ("[2001:DB8::1]", "2001:db8::1"),
        ("under_score.test", "under_score.test"),
        ("www.example.test.", "www.example.test"),  # the root label's dot is dropped
        ("www.example.test.:80", "www.example.test"),
    ],
)
def test_parse_host(value: str, host: str) -> None:
    assert parse_host(value) == host


@pytest.mark.parametrize(
    "value",
    [
        "",
        ".",
        ":80",
        "a b",
        "x:y:z",
        "x:80a",
        "x:-1",
        "x: 80",
        "x:1234567",
        "a/b",
        "a@b",
        "a\\b",
        "a\tb",
        "[::1",
        "[::1]x",
        "[::1]:x",
        "[zz::1]",
        "::1",
        "é.test",
    ],
)
def test_parse_host_rejects(value: str) -> None:
    assert parse_host(value) is None


# ------------------------------------------------------------------- host_of's memo
HOST_VALUES = [
    b"api.test",
    b"API.Test:8443",
    b"www.example.test.",
    b"[::1]:443",
    b"[::1",
    b"a b",
    b"host:99999999",
    b"h\xc3\xa9.test",
    b"",
]


@pytest.mark.parametrize("value", HOST_VALUES)
def test_host_of_is_parse_host_remembered(value: bytes) -> None:
    expected = parse_host(value.decode("latin-1"))
    first = host_of(value)
    assert first == expected
    again = host_of(bytes(bytearray(value)))  # an equal value in another object
    assert again == expected
    if expected is not None:
        assert again is first  # the same str: its hash is computed once


def test_host_of_keeps_a_bounded_table() -> None:
    longest = b"a" * (routing._HOST_VALUE_MAX - 5) + b".test"
    assert host_of(longest) == longest.decode()
    assert routing._hosts[longest] == longest.decode()  # kept: at the bound
    too_long = b"a" + longest
    assert host_of(too_long) == too_long.decode()
    assert too_long not in routing._hosts  # too long to keep
    for n in range(routing._HOSTS_MAX + 10):
        assert host_of(b"h%d.test" % n) == f"h{n}.test"
        assert len(routing._hosts) <= routing._HOSTS_MAX
