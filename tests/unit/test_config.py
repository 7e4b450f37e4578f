"""Loading valid configs: every parsed value, value syntaxes, defaults and the JSON schema."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from bastion.config import (
    Address,
    ConfigError,
    RoutePath,
    UpstreamAddress,
    config_from_dict,
    json_schema,
    load_config,
)
from bastion.config.units import parse_duration, parse_size

EXAMPLE = """\
listen:
  http: 127.0.0.1:8080          # also "[::1]:8080", ":8080" (all interfaces); a list is allowed
sites:
  - hosts: ["api.example.test", "*.example.test", "*"]   # "*" = any host
    routes:
      - path: /api/             # prefix; also exact "= /health", or "~ ^/v[0-9]+/" regex
        methods: [GET, POST]    # optional
        strip_prefix: false
        proxy:
          upstreams: ["http://127.0.0.1:8000"]   # also "unix:/run/app.sock"
          timeouts: {connect: 5s, read: 60s}
      - path: /ws
        proxy: {upstreams: ["http://127.0.0.1:8001"]}
      - path: /old/
        redirect: {to: "/api/", status: 308}
      - path: /
        static: {root: ./public, index: index.html}
limits: {max_header_bytes: 16KiB, max_body_bytes: 10MiB}
access_log: {format: json, path: stdout}
"""

MINIMAL_SITE = {"routes": [{"path": "/", "respond": {"body": "ok"}}]}


def write(tmp_path: Path, text: str, name: str = "bastion.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_example_loads_with_every_value_parsed(tmp_path: Path) -> None:
    (tmp_path / "public").mkdir()
    path = write(tmp_path, EXAMPLE)

    loaded = load_config(path)
    config = loaded.config

    assert loaded.source == path.resolve()
    assert loaded.secrets == frozenset()
    assert config.listen.http == [Address("127.0.0.1", 8080)]
    assert str(config.listen.http[0]) == "127.0.0.1:8080"
    [site] = config.sites
    assert site.hosts == ["api.example.test", "*.example.test", "*"]
    api, ws, old, root = site.routes

    assert api.path == RoutePath("prefix", "/api/", "/api/")
    assert api.methods == ["GET", "POST"]
    assert api.strip_prefix is False
    assert api.proxy is not None
    assert api.redirect is None and api.static is None and api.respond is None
    [endpoint] = api.proxy.upstreams
    upstream = endpoint.url
    assert upstream == UpstreamAddress("http", "127.0.0.1", 8000, None, "http://127.0.0.1:8000")
    assert upstream.authority == "127.0.0.1:8000"
    assert str(upstream) == "http://127.0.0.1:8000"
    assert (api.proxy.timeouts.connect, api.proxy.timeouts.read) == (5.0, 60.0)
    assert api.proxy.timeouts.send == 60.0
    assert api.proxy.preserve_host is None  # true for http:// upstreams, false for https://
    assert api.proxy.websocket_idle_timeout == 3600.0
    assert api.proxy.max_idle_connections == 64
    assert api.proxy.idle_timeout == 4.0

    assert ws.path.kind == "prefix" and ws.path.value == "/ws"
    assert ws.methods is None
    assert ws.proxy is not None and ws.proxy.upstreams[0].url.port == 8001

    assert old.redirect is not None
    assert (old.redirect.to, old.redirect.status) == ("/api/", 308)

    assert root.static is not None
    assert root.static.root == (tmp_path / "public").resolve()
    assert root.static.root.is_absolute()
    assert root.static.index == ["index.html"]
    assert root.static.cache_control is None

    assert config.limits.max_header_bytes == 16 * 1024
    assert config.limits.max_body_bytes == 10 * 1024 * 1024
    assert config.limits.max_uri_bytes == 8 * 1024
    assert config.limits.max_connections == 10000
    assert (config.access_log.format, config.access_log.path) == ("json", "stdout")


def test_defaults_of_a_minimal_config() -> None:
    config = config_from_dict({"sites": [MINIMAL_SITE]}).config

    assert config.listen.http == [Address("127.0.0.1", 8080)]
    assert config.sites[0].hosts == ["*"]
    assert config.sites[0].routes[0].respond is not None
    assert config.sites[0].routes[0].respond.status == 200
    assert config.sites[0].routes[0].respond.content_type == "text/plain; charset=utf-8"
    assert (config.timeouts.header, config.timeouts.body, config.timeouts.keepalive) == (
        10.0,
        60.0,
        75.0,
    )
    assert config.trusted_proxies == []
    assert config.workers == 1
    assert config.shutdown_timeout == 30.0
    assert config.pid_file is None
    assert config.watch is False
    assert config.log_level == "info"


def test_route_path_kinds() -> None:
    routes = [
        {"path": "= /health", "respond": {}},
        {"path": "=/ready", "respond": {}},
        {"path": "~ ^/v[0-9]+/", "respond": {}},
        {"path": "/api/", "respond": {}},
    ]
    config = config_from_dict({"sites": [{"routes": routes}]}).config
    paths = [route.path for route in config.sites[0].routes]

    assert [(p.kind, p.value) for p in paths] == [
        ("exact", "/health"),
        ("exact", "/ready"),
        ("regex", "^/v[0-9]+/"),
        ("prefix", "/api/"),
    ]
    assert paths[0].text == "= /health"
    assert str(paths[2]) == "~ ^/v[0-9]+/"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (5, 5.0),
        (1.5, 1.5),
        ("250ms", 0.25),
        ("5s", 5.0),
        ("1.5s", 1.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("30", 30.0),
        (" 10s ", 10.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("fast", "expected a duration like 5s, 250ms or 1m, got 'fast'"),
        ("5 s", "expected a duration like 5s, 250ms or 1m"),
        ("5sec", "expected a duration like 5s, 250ms or 1m"),
        ("-5s", "a duration must not be negative, got '-5s'"),
        (-1, "a duration must not be negative, got -1"),
        (True, "expected a duration like 5s, 250ms or 1m, got true"),
        (float("inf"), "a duration must be a finite number"),
    ],
)
def test_bad_durations(value: object, expected: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (0, 0),
        (512, 512),
        ("512", 512),
        ("512B", 512),
        ("16KiB", 16384),
        ("10MiB", 10 * 1024**2),
        ("1GiB", 1024**3),
        ("16KB", 16000),
        ("2MB", 2_000_000),
        ("1GB", 1_000_000_000),
        ("16k", 16384),
        ("16K", 16384),
        ("1m", 1024**2),
        ("1M", 1024**2),
        ("1g", 1024**3),
        ("1.5KiB", 1536),
    ],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("value", ["big", "16 kilobytes", "16kib", "1T", "", [], 1.5, True])
def test_bad_sizes_name_the_accepted_forms(value: object) -> None:
    with pytest.raises(ValueError) as info:
        parse_size(value)
    assert str(info.value).startswith(
        "expected a size like 512, 16KiB, 10MiB, 1GiB, 16KB or 16k, got "
    )


def test_negative_size() -> None:
    with pytest.raises(ValueError, match="a size must not be negative, got -1"):
        parse_size(-1)


def test_listen_forms() -> None:
    def listen(value: object) -> list[Address]:
        data = {"listen": {"http": value}, "sites": [MINIMAL_SITE]}
        return config_from_dict(data).config.listen.http

    assert listen("[::1]:8080") == [Address("::1", 8080)]
    assert listen(":8080") == [Address(None, 8080)]
    assert listen("localhost:80") == [Address("localhost", 80)]
    both = listen(["127.0.0.1:8080", "[::1]:8081", ":9000"])
    assert both == [Address("127.0.0.1", 8080), Address("::1", 8081), Address(None, 9000)]
    assert [str(a) for a in both] == ["127.0.0.1:8080", "[::1]:8081", ":9000"]


def test_upstream_forms() -> None:
    upstreams = [
        "http://backend.internal",
        "http://[::1]:8000/",
        "unix:/run/app.sock",
        "unix:///run/other.sock",
        "HTTP://LOCALHOST:81",
    ]
    route = {"path": "/", "proxy": {"upstreams": upstreams}}
    config = config_from_dict({"sites": [{"routes": [route]}]}).config
    assert config.sites[0].routes[0].proxy is not None
    parsed = [u.url for u in config.sites[0].routes[0].proxy.upstreams]

    assert [(u.scheme, u.host, u.port, u.path) for u in parsed] == [
        ("http", "backend.internal", 80, None),
        ("http", "::1", 8000, None),
        ("unix", None, None, "/run/app.sock"),
        ("unix", None, None, "/run/other.sock"),
        ("http", "localhost", 81, None),
    ]
    assert [u.authority for u in parsed] == [
        "backend.internal:80",
        "[::1]:8000",
        "localhost",
        "localhost",
        "localhost:81",
    ]
    assert [str(u) for u in parsed] == upstreams


def test_workers_auto_and_other_top_level_values(tmp_path: Path) -> None:
    data = {
        "sites": [MINIMAL_SITE],
        "workers": "auto",
        "trusted_proxies": ["10.0.0.0/8", "::1", "127.0.0.1", "192.168.1.7/24"],
        "shutdown_timeout": "1m",
        "pid_file": "run/bastion.pid",
        "log_level": "WARNING",
        "access_log": {"format": "combined", "path": "logs/access.log"},
        "timeouts": {"header": "5s", "body": 30, "keepalive": "2m"},
    }
    config = config_from_dict(data, base_dir=tmp_path).config

    assert config.workers == (os.cpu_count() or 1)
    assert config.trusted_proxies == [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("192.168.1.0/24"),
    ]
    assert config.shutdown_timeout == 60.0
    assert config.pid_file == str(tmp_path.resolve() / "run" / "bastion.pid")
    assert config.log_level == "warning"
    assert config.access_log.path == str(tmp_path.resolve() / "logs" / "access.log")
    assert (config.timeouts.header, config.timeouts.body, config.timeouts.keepalive) == (
        5.0,
        30.0,
        120.0,
    )


def test_yaml_off_means_access_log_off(tmp_path: Path) -> None:
    text = "sites: [{routes: [{path: /, respond: {}}]}]\naccess_log: {format: off}\n"
    assert load_config(write(tmp_path, text)).config.access_log.format == "off"


def test_hosts_are_normalised() -> None:
    site = {"hosts": ["API.Example.Test", "*.Example.test", "10.0.0.1", "::1"], **MINIMAL_SITE}
    config = config_from_dict({"sites": [site]}).config
    assert config.sites[0].hosts == ["api.example.test", "*.example.test", "10.0.0.1", "[::1]"]


def test_methods_are_uppercased_and_deduplicated() -> None:
    route = {"path": "/", "methods": ["get", "GET", "post"], "respond": {}}
    config = config_from_dict({"sites": [{"routes": [route]}]}).config
    assert config.sites[0].routes[0].methods == ["GET", "POST"]


def test_static_root_resolves_against_base_dir(tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    route = {"path": "/", "static": {"root": "www", "index": ["a.html", "b.html"]}}
    config = config_from_dict({"sites": [{"routes": [route]}]}, base_dir=tmp_path).config
    static = config.sites[0].routes[0].static
    assert static is not None
    assert static.root == tmp_path.resolve() / "www"
    assert static.index == ["a.html", "b.html"]


def test_same_path_with_disjoint_methods_and_a_fallback_is_allowed() -> None:
    routes = [
        {"path": "/api/", "methods": ["GET"], "respond": {"body": "read"}},
        {"path": "/api/", "methods": ["POST", "PUT"], "respond": {"body": "write"}},
        {"path": "/api/", "respond": {"body": "everything else"}},
    ]
    config = config_from_dict({"sites": [{"routes": routes}]}).config
    assert [r.methods for r in config.sites[0].routes] == [["GET"], ["POST", "PUT"], None]


def test_yaml_anchors_under_x_keys_and_merge_keys(tmp_path: Path) -> None:
    text = """\
x-backend: &backend
  upstreams: ["http://127.0.0.1:9000"]
  preserve_host: false
sites:
  - routes:
      - path: /a
        proxy:
          <<: *backend
          preserve_host: true
      - path: /b
        proxy: *backend
"""
    config = load_config(write(tmp_path, text)).config
    a, b = (route.proxy for route in config.sites[0].routes)
    assert a is not None and b is not None
    assert a.upstreams[0].url.port == 9000 and a.preserve_host is True
    assert b.upstreams[0].url.port == 9000 and b.preserve_host is False


def test_model_dump_gives_back_text_forms() -> None:
    route = {"path": "= /x", "proxy": {"upstreams": ["unix:/run/a.sock"]}}
    data = {"listen": {"http": "[::1]:80"}, "sites": [{"routes": [route]}]}
    dumped = config_from_dict(data).config.model_dump(mode="json")
    assert dumped["listen"]["http"] == ["[::1]:80"]
    assert dumped["sites"][0]["routes"][0]["path"] == "= /x"
    assert dumped["sites"][0]["routes"][0]["proxy"]["upstreams"] == ["unix:/run/a.sock"]


def test_config_from_dict_reports_with_its_source_name() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"sites": [{"routes": [{"path": "/"}]}]}, source="<quick mode>")
    assert str(info.value) == (
        "<quick mode>: sites[0].routes[0]: "
        "a route needs exactly one of proxy, redirect, static, respond, s3"
    )


def test_json_schema() -> None:
    schema = json_schema()
    assert "sites" in schema["properties"]
    assert schema["required"] == ["sites"]
    assert schema["additionalProperties"] is False
    route = schema["$defs"]["Route"]
    assert set(route["properties"]) == {
        "path",
        "methods",
        "strip_prefix",
        "path_normalisation",
        "encoded_slashes",
        "path_parameters",
        "proxy",
        "redirect",
        "static",
        "respond",
        "s3",
        "cache",
        # policies (docs/policies.md)
        "ip_rules",
        "cors",
        "rate_limits",
        "quotas",
        "headers",
        "security_headers",
        "auth",
        "max_body",
        "validation",
        "compress",
    }
    assert route["properties"]["path"]["type"] == "string"
    assert "description" in schema["$defs"]["Proxy"]["properties"]["idle_timeout"]
