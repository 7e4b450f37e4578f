"""The canonical request path (bastion.http.target): what is routed, forwarded and cached."""

from __future__ import annotations

import pytest

from bastion.http.request import Request
from bastion.http.target import (
    FRAGMENT,
    canonical_path,
    has_encoded_slash,
    has_path_parameter,
    set_origin_target,
)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("/", "/"),
        ("/api/x", "/api/x"),
        ("/a/../api/x", "/api/x"),
        ("/a/./b", "/a/b"),
        ("//a//b", "/a/b"),
        ("/api//time", "/api/time"),
        ("/a/b/", "/a/b/"),
        ("/a/b/.", "/a/b/"),
        ("/a/b/..", "/a/"),
        ("/a/..", "/"),
        ("/.", "/"),
        ("//", "/"),
        ("/.hidden/x", "/.hidden/x"),
        ("/a/.../b", "/a/.../b"),
        # escapes of unreserved characters are decoded, then dot segments resolved
        ("/%61pi/x", "/api/x"),
        ("/api/%2e/time", "/api/time"),
        ("/a/%2e%2e/admin", "/admin"),
        ("/a/%2E/b", "/a/b"),
        ("/a/.%2e/b", "/b"),
        ("/%7euser/%41-%5a", "/~user/A-Z"),
        # other escapes stay escaped, in uppercase
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/a%20b", "/a%20b"),
        ("/q%3f%23%25", "/q%3F%23%25"),
        ("/%ff", "/%FF"),
        # characters a path cannot hold raw are escaped
        ('/a"b{c}|^`', "/a%22b%7Bc%7D%7C%5E%60"),
        ("/caf\xc3\xa9", "/caf%C3%A9"),
        # ";" parameters stay part of their segment (a route refuses them unless it keeps them)
        ("/a;v=1/b;x", "/a;v=1/b;x"),
        ("/a;v=1//b/./c;x", "/a;v=1/b/c;x"),
        ("/a/b/.;x", None),
    ],
)
def test_canonical_path(raw: str, canonical: str | None) -> None:
    if canonical is None:
        with pytest.raises(ValueError):
            canonical_path(raw)
    else:
        assert canonical_path(raw) == canonical
        assert canonical_path(canonical) == canonical  # a fixed point


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "api/x",  # not absolute
        "*",
        "/..",
        "/../x",
        "/a/../../x",
        "/%2e%2e/x",
        "/a/%2E%2E/%2e%2e/x",
        "/a%00b",  # control characters, escaped or not
        "/a%0d%0ab",
        "/a%7f",
        "/a\x01b",
        "/a b",
        "/a%zz",  # broken escapes
        "/a%2",
        "/a%",
        "/a/..;/b",  # ".." to Tomcat, Spring, Jetty
        "/a/.;x/b",
        "/a/;x/b",  # an empty segment there
    ],
)
def test_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        canonical_path(raw)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [("/a%2Fb", "/a%2Fb"), ("/a%2fb/c", "/a%2Fb/c"), ("/a%5cb", "/a%5Cb"), ("/a\\b", "/a%5Cb")],
)
def test_encoded_slashes_stay_encoded(raw: str, canonical: str) -> None:
    # kept as part of the segment here; a route refuses them unless it keeps them
    assert canonical_path(raw) == canonical
    assert has_encoded_slash(canonical)


@pytest.mark.parametrize(
    "raw",
    [
        "/a/..%2f..%2fx",  # ".." once a backend decodes %2F
        "/a/x%2F..",
        "/a/.%5Cb",
        "/a/..%2F;x/b",
        "/%2F%2Fevil.example",  # empty segments: "//evil.example" there
        "/files/%2Fetc/passwd",
        "/a/b%2F",
    ],
)
def test_dot_or_empty_segments_behind_encoded_slashes_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="encoded slash"):
        canonical_path(raw)


def test_plain_paths_come_back_as_they_are() -> None:
    path = "/api/v1/users/42"
    assert canonical_path(path) is path


def test_origin_target_forwards_the_canonical_path() -> None:
    req = Request()
    req.target = b"/api//x/../time?b=%2e&a=1"
    assert set_origin_target(req, req.target) is None
    assert (req.path, req.raw_path, req.query) == ("/api/time", "/api//x/../time", "b=%2e&a=1")
    assert req.target == b"/api/time?b=%2e&a=1"  # the query passes unchanged
    plain = Request()
    plain.target = target = b"/api/time?x=1"
    assert set_origin_target(plain, target) is None
    assert plain.target is target


@pytest.mark.parametrize("target", [b"/a#b", b"/api/admin/secret#/../../public/x", b"/a?b#c"])
def test_fragment_is_refused(target: bytes) -> None:
    assert set_origin_target(Request(), target) == FRAGMENT


def test_repeated_targets_give_the_same_fields() -> None:
    # plain paths are remembered (a bounded memo); rewritten ones never are
    for _ in range(3):
        for target, path, forwarded in (
            (b"/api/v1/x?q=1", "/api/v1/x", b"/api/v1/x?q=1"),
            (b"/api//v1/./x?q=1", "/api/v1/x", b"/api/v1/x?q=1"),
        ):
            req = Request()
            req.target = target
            assert set_origin_target(req, target) is None
            assert (req.path, req.target) == (path, forwarded)
        assert set_origin_target(Request(), b"/api/v1/x#f") == FRAGMENT


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        (b"/api/admin;x/secret", "/api/admin;x/secret", ""),
        (b"/a;jsessionid=1?q=1", "/a;jsessionid=1", "q=1"),
        (b"/repos/a;v=1/b", "/repos/a;v=1/b", ""),
    ],
)
def test_a_path_parameter_is_left_to_the_route(target: bytes, path: str, query: str) -> None:
    # never the fast path's object (nor remembered as plain): Plan.route sees the path as
    # rewritten and asks the matched route whether it keeps ";" parameters
    for _ in range(2):
        req = Request()
        req.target = target
        assert set_origin_target(req, target) is None
        assert (req.path, req.query) == (path, query)
        assert req.path is not req.raw_path
        assert req.target == target  # forwarded unchanged where a route keeps them
        assert has_path_parameter(req.path)


def test_an_escaped_semicolon_is_a_path_parameter() -> None:
    # some stacks decode %3B before they cut parameters; the escape stays in its form
    assert canonical_path("/api/admin%3bx/secret") == "/api/admin%3Bx/secret"
    assert has_path_parameter("/api/admin%3Bx/secret")


def test_a_semicolon_in_the_query_is_not_a_path_parameter() -> None:
    req = Request()
    req.target = target = b"/api/items?a=1;b=2"
    assert set_origin_target(req, target) is None
    assert req.path is req.raw_path and req.target is target
    assert not has_path_parameter(req.path)
