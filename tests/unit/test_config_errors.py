"""Broken configs: every problem reported at once, with file, line, key path and a human message."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config import ConfigError, ConfigIssue, config_from_dict, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bastion.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


def lines_of(error: ConfigError, tmp_path: Path) -> list[str]:
    """The report with the tmp directory cut off: ``bastion.yaml:7: path: message``."""
    return str(error).replace(f"{tmp_path}/", "").splitlines()


def test_three_mistakes_are_all_reported_with_line_and_path(tmp_path: Path) -> None:
    text = """\
listen:
  http: 127.0.0.1:8080
sites:
  - hosts: [api.example.test]
    routes:
      - path: /api/
        strip_prefx: true
        proxy:
          upstreams: ["http://127.0.0.1:8000"]
          timeouts: {connect: fast}
      - path: /b/
        proxy:
          upstreams:
            - http://127.0.0.1:8001
            - ftp://files.example.test
"""
    error = errors_of(tmp_path, text)

    assert lines_of(error, tmp_path) == [
        "bastion.yaml:7: sites[0].routes[0]: "
        "unknown key 'strip_prefx' (did you mean 'strip_prefix'?)",
        "bastion.yaml:10: sites[0].routes[0].proxy.timeouts.connect: "
        "expected a duration like 5s, 250ms or 1m, got 'fast'",
        "bastion.yaml:15: sites[0].routes[1].proxy.upstreams[1]: "
        "only http://, https:// and unix: upstreams are supported; expected http://host:port, "
        "https://host:port or unix:/absolute/path.sock, got 'ftp://files.example.test'",
    ]
    first = error.issues[0]
    assert first == ConfigIssue(
        str(tmp_path / "bastion.yaml"),
        7,
        "sites[0].routes[0]",
        "unknown key 'strip_prefx' (did you mean 'strip_prefix'?)",
    )


def test_issue_str_without_line_or_path() -> None:
    assert str(ConfigIssue("a.yaml", None, "sites", "must not be empty")) == (
        "a.yaml: sites: must not be empty"
    )
    assert str(ConfigIssue("a.yaml", 3, "", "invalid YAML: x")) == "a.yaml:3: invalid YAML: x"


def test_missing_keys_point_at_the_parent(tmp_path: Path) -> None:
    text = "listen: {http: ':80'}\nsites:\n  - routes:\n      - path: /\n        proxy: {}\n"
    assert lines_of(errors_of(tmp_path, text), tmp_path) == [
        "bastion.yaml:5: sites[0].routes[0].proxy: missing required key 'upstreams'"
    ]
    assert lines_of(errors_of(tmp_path, "listen: {http: ':80'}\n"), tmp_path) == [
        "bastion.yaml:1: missing required key 'sites'"
    ]


def test_unknown_key_without_a_close_match_lists_the_known_keys(tmp_path: Path) -> None:
    text = "sites: [{routes: [{path: /, respond: {}}]}]\nlimits: {zzz: 1}\n"
    [line] = lines_of(errors_of(tmp_path, text), tmp_path)
    assert line == (
        "bastion.yaml:2: limits: unknown key 'zzz' (expected one of: max_header_bytes, "
        "max_uri_bytes, max_body_bytes, max_connections)"
    )


def test_literal_and_type_errors_are_worded_for_operators(tmp_path: Path) -> None:
    text = """\
sites:
  - routes:
      - path: /old/
        redirect: {to: /new/, status: 300}
      - path: /x
        respond: {status: 100}
        strip_prefix: maybe
limits: {max_header_bytes: big, max_connections: many}
access_log: {format: xml}
workers: 0
watch: [1]
"""
    assert lines_of(errors_of(tmp_path, text), tmp_path) == [
        "bastion.yaml:4: sites[0].routes[0].redirect.status: "
        "expected one of 301, 302, 303, 307, 308, got 300",
        "bastion.yaml:6: sites[0].routes[1].respond.status: must be at least 200, got 100",
        "bastion.yaml:7: sites[0].routes[1].strip_prefix: expected true or false, got 'maybe'",
        "bastion.yaml:8: limits.max_header_bytes: "
        "expected a size like 512, 16KiB, 10MiB, 1GiB, 16KB or 16k, got 'big'",
        "bastion.yaml:8: limits.max_connections: expected a whole number, got 'many'",
        "bastion.yaml:9: access_log.format: expected one of 'json', 'combined', 'off', got 'xml'",
        "bastion.yaml:10: workers: must be at least 1, got 0",
        "bastion.yaml:11: watch: expected true or false, got a list",
    ]


def test_no_pydantic_noise_in_messages(tmp_path: Path) -> None:
    text = "sites:\n  - routes:\n      - path: api\n        proxy: {upstreams: [1]}\n"
    report = str(errors_of(tmp_path, text))
    assert "Value error" not in report
    assert "errors.pydantic.dev" not in report
    assert "a route path must start with '/', got 'api'" in report


def test_yaml_syntax_error_has_the_line(tmp_path: Path) -> None:
    text = "sites:\n  - routes:\n      - path: /\n        respond: {body: [1, 2}\n"
    [issue] = errors_of(tmp_path, text).issues
    assert (issue.line, issue.column) == (4, 25)  # the bracket left open
    assert issue.path == ""
    assert issue.message.startswith("the '[' opened here is not closed")


def test_unquoted_wildcard_host_gets_a_hint(tmp_path: Path) -> None:
    [issue] = errors_of(tmp_path, "sites:\n  - hosts: [*.example.test]\n").issues
    assert issue.line == 2
    assert 'quote it, like "*.example.test"' in issue.message


def test_duplicate_key(tmp_path: Path) -> None:
    text = """\
sites:
  - routes:
      - path: /
        respond: {body: one}
        respond: {body: two}
"""
    assert lines_of(errors_of(tmp_path, text), tmp_path) == [
        "bastion.yaml:5:9: sites[0].routes[0].respond: duplicate key 'respond': it is "
        "already defined on line 4; keep one of the two (YAML would silently use the last)"
    ]


@pytest.mark.parametrize("text", ["", "\n# nothing but a comment\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    [issue] = errors_of(tmp_path, text).issues
    assert issue.message == "the file is empty; it needs at least a 'sites' section"


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    [issue] = errors_of(tmp_path, "- sites\n").issues
    assert (issue.line, issue.message) == (1, "the top level must be a mapping of keys like sites:")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    [issue] = info.value.issues
    assert issue.message == "cannot read the config file: No such file or directory"


def test_duplicate_host_across_sites_names_both(tmp_path: Path) -> None:
    text = """\
sites:
  - hosts: [api.example.test, "*.example.test"]
    routes: [{path: /, respond: {}}]
  - hosts:
      - www.example.test
      - API.example.test
    routes: [{path: /, respond: {}}]
  - routes: [{path: /, respond: {}}]
  - routes: [{path: /, respond: {}}]
"""
    assert lines_of(errors_of(tmp_path, text), tmp_path) == [
        "bastion.yaml:6: sites[1].hosts[1]: host 'api.example.test' is already used by sites[0]",
        "bastion.yaml:9: sites[3]: "
        "host '*' (the default when hosts is omitted) is already used by sites[2]",
    ]


def test_bad_host_patterns(tmp_path: Path) -> None:
    text = """\
sites:
  - hosts: ["api.example.test:8080", "api.*.test", "bad_host!", "a.test", "A.test"]
    routes: [{path: /, respond: {}}]
"""
    assert lines_of(errors_of(tmp_path, text), tmp_path) == [
        "bastion.yaml:2: sites[0].hosts[0]: a site host must not include a port, got "
        "'api.example.test:8080'; sites match a host on every listener",
        "bastion.yaml:2: sites[0].hosts[1]: a wildcard must be the whole first label, "
        "like *.example.test, got 'api.*.test'",
        "bastion.yaml:2: sites[0].hosts[2]: 'bad_host!' is not a valid host name or IP address",
        "bastion.yaml:2: sites[0].hosts[4]: host 'a.test' is listed twice in this site",
    ]


def test_exactly_one_action(tmp_path: Path) -> None:
    (tmp_path / "public").mkdir()
    text = """\
sites:
  - routes:
      - path: /none
      - path: /two
        proxy: {upstreams: ["http://127.0.0.1:1"]}
        static: {root: public}
"""
    assert lines_of(errors_of(tmp_path, text), tmp_path) == [
        "bastion.yaml:3: sites[0].routes[0]: "
        "a route needs exactly one of proxy, redirect, static, respond, s3",
        "bastion.yaml:4: sites[0].routes[1]: "
        "a route needs exactly one of proxy, redirect, static, respond, s3; this one has proxy "
        "and static",
    ]


def test_rules_are_reported_alongside_field_errors() -> None:
    route = {"path": "/", "respond": {"status": "x"}, "redirect": {"to": "/a"}}
    with pytest.raises(ConfigError) as info:
        config_from_dict({"sites": [{"routes": [route]}]})
    assert [(i.path, i.message) for i in info.value.issues] == [
        ("sites[0].routes[0].respond.status", "expected a whole number, got 'x'"),
        (
            "sites[0].routes[0]",
            "a route needs exactly one of proxy, redirect, static, respond, s3; "
            "this one has redirect and respond",
        ),
    ]


def test_strip_prefix_only_on_prefix_proxy_routes(tmp_path: Path) -> None:
    text = """\
sites:
  - routes:
      - path: = /health
        strip_prefix: true
        proxy: {upstreams: ["http://127.0.0.1:1"]}
      - path: ~ ^/v1/
        strip_prefix: true
        proxy: {upstreams: ["http://127.0.0.1:1"]}
      - path: /old/
        strip_prefix: true
        redirect: {to: /new/}
      - path: /api/
        strip_prefix: true
        proxy: {upstreams: ["http://127.0.0.1:1"]}
"""
    assert lines_of(errors_of(tmp_path, text), tmp_path) == [
        "bastion.yaml:4: sites[0].routes[0].strip_prefix: "
        "strip_prefix only applies to prefix routes; '= /health' is an exact match",
        "bastion.yaml:7: sites[0].routes[1].strip_prefix: "
        "strip_prefix only applies to prefix routes; '~ ^/v1/' is a regex match",
        "bastion.yaml:10: sites[0].routes[2].strip_prefix: "
        "strip_prefix only applies to proxy and s3 routes, not redirect",
    ]


def test_duplicate_routes(tmp_path: Path) -> None:
    text = """\
sites:
  - routes:
      - {path: /a, respond: {}}
      - {path: /a, respond: {}}
      - {path: = /b, methods: [GET, POST], respond: {}}
      - {path: =/b, methods: [post, PUT], respond: {}}
      - {path: /c, respond: {}}
      - {path: /c, methods: [GET], respond: {}}
"""
    assert lines_of(errors_of(tmp_path, text), tmp_path) == [
        "bastion.yaml:4: sites[0].routes[1].path: route '/a' duplicates routes[0] "
        "(both for every method)",
        "bastion.yaml:6: sites[0].routes[3].path: route '=/b' duplicates routes[2] (both for POST)",
        "bastion.yaml:8: sites[0].routes[5].path: route '/c' duplicates routes[4] "
        "(it takes every method)",
    ]


def test_path_method_and_regex_errors(tmp_path: Path) -> None:
    text = """\
sites:
  - routes:
      - {path: "~ ^/(unclosed", respond: {}}
      - {path: "/a b", respond: {}}
      - {path: "/x", methods: ["GE T"], respond: {}}
      - {path: "/y", methods: [], respond: {}}
"""
    report = lines_of(errors_of(tmp_path, text), tmp_path)
    assert report[0].startswith(
        "bastion.yaml:3: sites[0].routes[0].path: invalid regular expression '^/(unclosed': "
    )
    assert report[1:] == [
        "bastion.yaml:4: sites[0].routes[1].path: a route path must not contain spaces, '?' or "
        "'#', got '/a b' (the query string is not part of the path)",
        "bastion.yaml:5: sites[0].routes[2].methods[0]: "
        "expected an HTTP method like GET or POST, got 'GE T'",
        "bastion.yaml:6: sites[0].routes[3].methods: must not be empty",
    ]


def test_listen_and_upstream_errors(tmp_path: Path) -> None:
    text = """\
listen:
  http: ["::1:8080", "8080", "127.0.0.1:0", "127.0.0.1"]
sites:
  - routes:
      - path: /
        proxy:
          upstreams:
            - https://127.0.0.1:0
            - http://127.0.0.1:8000/api
            - unix:run/app.sock
            - http://:80
"""
    assert lines_of(errors_of(tmp_path, text), tmp_path) == [
        "bastion.yaml:2: listen.http[0]: "
        "IPv6 addresses must be in brackets, like [::1]:8080, got '::1:8080'",
        "bastion.yaml:2: listen.http[1]: expected host:port, [ipv6]:port or :port (all "
        "interfaces), like 127.0.0.1:8080; to listen on every interface write ':8080'",
        "bastion.yaml:2: listen.http[2]: "
        "port must be a number from 1 to 65535, got '0' in '127.0.0.1:0'",
        "bastion.yaml:2: listen.http[3]: missing port in '127.0.0.1'; expected host:port, "
        "[ipv6]:port or :port (all interfaces), like 127.0.0.1:8080",
        "bastion.yaml:8: sites[0].routes[0].proxy.upstreams[0]: "
        "port must be a number from 1 to 65535, got '0' in 'https://127.0.0.1:0'",
        "bastion.yaml:9: sites[0].routes[0].proxy.upstreams[1]: an upstream must not have a "
        "path, query or fragment, got 'http://127.0.0.1:8000/api'; use strip_prefix on the "
        "route to change the path sent upstream",
        "bastion.yaml:10: sites[0].routes[0].proxy.upstreams[2]: a unix socket path must be "
        "absolute, like unix:/run/app.sock, got 'unix:run/app.sock'",
        "bastion.yaml:11: sites[0].routes[0].proxy.upstreams[3]: missing host in "
        "'http://:80'; expected http://host:port, https://host:port or "
        "unix:/absolute/path.sock",
    ]


def test_static_root_must_be_an_existing_directory(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    text = """\
sites:
  - routes:
      - path: /a/
        static: {root: ./public}
      - path: /b/
        static:
          root: file.txt
          index: ../secret
"""
    assert lines_of(errors_of(tmp_path, text), tmp_path) == [
        "bastion.yaml:4: sites[0].routes[0].static.root: static root ./public does not exist",
        "bastion.yaml:7: sites[0].routes[1].static.root: static root file.txt is not a directory",
        "bastion.yaml:8: sites[0].routes[1].static.index[0]: "
        "an index entry must be a plain file name, got '../secret'",
    ]


def test_header_values_reject_line_breaks() -> None:
    route = {"path": "/", "redirect": {"to": "/a\r\nSet-Cookie: x=1"}}
    with pytest.raises(ConfigError) as info:
        config_from_dict({"sites": [{"routes": [route]}]})
    [issue] = info.value.issues
    assert (issue.path, issue.message) == (
        "sites[0].routes[0].redirect.to",
        "must not contain control characters such as line breaks",
    )


def test_zero_timeouts_are_rejected() -> None:
    route = {"path": "/", "proxy": {"upstreams": ["http://a"], "timeouts": {"read": "0s"}}}
    with pytest.raises(ConfigError) as info:
        config_from_dict({"sites": [{"routes": [route]}]})
    assert [(i.path, i.message) for i in info.value.issues] == [
        ("sites[0].routes[0].proxy.timeouts.read", "must be greater than 0, got 0")
    ]


def test_a_route_path_with_a_path_parameter_needs_keep() -> None:
    proxy = {"upstreams": ["http://127.0.0.1:1"]}
    routes = [
        {"path": "/a;v=1/", "proxy": proxy},
        {"path": "= /b%3bx", "proxy": proxy},
        {"path": "/c;v=1/", "path_parameters": "keep", "proxy": proxy},
        {"path": "~ ^/d;", "proxy": proxy},  # a regex may match paths without one
    ]
    with pytest.raises(ConfigError) as info:
        config_from_dict({"sites": [{"routes": routes}]})
    assert [(i.path, i.message) for i in info.value.issues] == [
        (
            "sites[0].routes[0].path",
            "'/a;v=1/' holds a ';' path parameter, which is refused unless the route sets "
            "path_parameters: keep",
        ),
        (
            "sites[0].routes[1].path",
            "'= /b%3bx' holds a ';' path parameter, which is refused unless the route sets "
            "path_parameters: keep",
        ),
    ]


def test_cache_sharing_settings_need_the_right_kind_of_route() -> None:
    """allow_authorization is for routes without auth, shared and key.consumer for routes
    with it: on the other kind they would do nothing, without a word."""
    proxy = {"upstreams": ["http://127.0.0.1:1"]}
    keys = {"api_keys": {}}
    routes = [
        {"path": "/a/", "proxy": proxy, "auth": keys, "cache": {"allow_authorization": True}},
        {"path": "/b/", "proxy": proxy, "cache": {"shared": True}},
        {"path": "/c/", "proxy": proxy, "cache": {"key": {"consumer": True}}},
        {"path": "/d/", "proxy": proxy, "auth": keys, "cache": {"shared": True}},
        {"path": "/e/", "proxy": proxy, "cache": {"allow_authorization": True}},
    ]
    with pytest.raises(ConfigError) as info:
        config_from_dict({"sites": [{"routes": routes}]})
    assert [(i.path, i.message) for i in info.value.issues] == [
        (
            "sites[0].routes[0].cache.allow_authorization",
            "allow_authorization is for routes without auth; on this route answers are kept "
            "per consumer, and shared: true stores them once for all",
        ),
        (
            "sites[0].routes[1].cache.shared",
            "shared only applies to routes with auth (its consumers)",
        ),
        (
            "sites[0].routes[2].cache.key.consumer",
            "key.consumer only applies to routes with auth (its consumers)",
        ),
    ]
