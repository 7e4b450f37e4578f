"""Countries of clients from a MaxMind-format database (`stats.geoip`). The database is
written by hand here, in the MaxMind DB format (a binary search tree over address bits, a
data section, metadata), and read by the real `maxminddb` reader."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from bastion.clock import ManualClock
from bastion.config import ConfigError, config_from_dict
from bastion.observe.stats import StatsStore, StatsWriter
from bastion.observe.stats.countries import UNKNOWN, CountryLookup, open_lookup
from statskit import figures, interval

T0 = 1_800_000_000


# ---------------------------------------------------------------- a MaxMind DB writer
def _control(kind: int, size: int) -> bytes:
    """A field's control byte(s): its type and payload size."""
    extended = kind > 7
    if size < 29:
        head, tail = size, b""
    elif size < 285:
        head, tail = 29, bytes([size - 29])
    else:
        head, tail = 30, (size - 285).to_bytes(2, "big")
    first = bytes([((0 if extended else kind) << 5) | head])
    return first + (bytes([kind - 7]) if extended else b"") + tail


def _uint(kind: int, value: int) -> bytes:
    payload = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
    return _control(kind, len(payload)) + payload


def encode(value: Any) -> bytes:
    if isinstance(value, str):
        raw = value.encode()
        return _control(2, len(raw)) + raw
    if isinstance(value, dict):
        return _control(7, len(value)) + b"".join(
            encode(key) + encode(item) for key, item in value.items()
        )
    if isinstance(value, list):
        return _control(11, len(value)) + b"".join(encode(item) for item in value)
    if isinstance(value, tuple):  # (type, int): uint16 5, uint32 6, uint64 9
        return _uint(*value)
    raise TypeError(value)


def write_mmdb(path: Path, networks: dict[str, dict[str, Any]]) -> None:
    """An IPv4 database mapping each "a.b.c.d/len" network to its record."""
    data = b""
    offsets = []
    for record in networks.values():
        offsets.append(len(data))
        data += encode(record)
    nodes: list[list[Any]] = [[None, None]]
    for (network, _), offset in zip(networks.items(), offsets, strict=True):
        address, length = network.split("/")
        bits = int.from_bytes(bytes(int(part) for part in address.split(".")), "big")
        node = 0
        for depth in range(int(length)):
            bit = (bits >> (31 - depth)) & 1
            if depth == int(length) - 1:
                nodes[node][bit] = ("data", offset)
            else:
                if nodes[node][bit] is None:
                    nodes.append([None, None])
                    nodes[node][bit] = ("node", len(nodes) - 1)
                node = nodes[node][bit][1]
    count = len(nodes)

    def record(entry: Any) -> int:
        if entry is None:
            return count  # no data
        kind, value = entry
        return value if kind == "node" else count + 16 + value

    tree = b"".join(
        record(left).to_bytes(3, "big") + record(right).to_bytes(3, "big") for left, right in nodes
    )
    metadata = {
        "node_count": (6, count),
        "record_size": (5, 24),
        "ip_version": (5, 4),
        "database_type": "Test-Country",
        "languages": ["en"],
        "binary_format_major_version": (5, 2),
        "binary_format_minor_version": (5, 0),
        "build_epoch": (9, int(time.time())),
        "description": {"en": "countries for tests"},
    }
    path.write_bytes(tree + bytes(16) + data + b"\xab\xcd\xefMaxMind.com" + encode(metadata))


def country(code: str, name: str) -> dict[str, Any]:
    return {"country": {"iso_code": code, "names": {"en": name}}}


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "countries.mmdb"
    write_mmdb(
        path,
        {
            "192.0.2.0/24": country("DE", "Germany"),
            "198.51.100.0/24": country("JP", "Japan"),
            "203.0.113.128/25": {"registered_country": {"iso_code": "BR"}},
        },
    )
    return path


# ---------------------------------------------------------------- tests
def test_lookup_of_addresses(database: Path) -> None:
    lookup = CountryLookup(str(database))
    try:
        assert lookup.country("192.0.2.77") == "DE"
        assert lookup.country("198.51.100.1") == "JP"
        assert lookup.country("203.0.113.200") == "BR"  # registered country when no other
        assert lookup.country("203.0.113.5") == UNKNOWN  # the other half of that /24
        assert lookup.country("10.1.2.3") == UNKNOWN
        assert lookup.country("2001:db8::1") == UNKNOWN  # IPv6 in an IPv4 database
        assert lookup.country("not an address") == UNKNOWN
        assert lookup.count({"192.0.2.1": 3, "192.0.2.2": 4, "10.0.0.1": 1}) == {
            "DE": 7,
            UNKNOWN: 1,
        }
    finally:
        lookup.close()


def test_unreadable_database_means_no_countries(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mmdb"
    bad.write_bytes(b"not a database")
    assert open_lookup(str(bad)) is None
    assert open_lookup(None) is None


def test_countries_in_the_summary(tmp_path: Path, database: Path) -> None:
    clock = ManualClock(T0)
    writer = StatsWriter(tmp_path / "data", clock, geoip=str(database))
    try:
        for i in range(4):
            writer.add(
                interval(
                    T0 + i,
                    {"api": figures(10)},
                    clients={"192.0.2.10": 5, "192.0.2.11": 2, "198.51.100.9": 2, "::1": 1},
                )
            )
        assert writer.flush()
    finally:
        writer.close()
    clock.advance(4)
    summary = StatsStore(tmp_path / "data", clock).summary("5m")
    assert summary["top"]["countries"] == [
        {"key": "DE", "requests": 28},
        {"key": "JP", "requests": 8},
        {"key": UNKNOWN, "requests": 4},
    ]
    assert summary["top"]["clients"][0] == {"key": "192.0.2.10", "requests": 20}


def test_without_a_database_no_countries_are_counted(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    writer = StatsWriter(tmp_path, clock)
    try:
        writer.add(interval(T0, clients={"192.0.2.10": 10}))
        assert writer.flush()
    finally:
        writer.close()
    clock.advance(1)
    assert StatsStore(tmp_path, clock).summary("5m")["top"]["countries"] == []


def test_config_refuses_a_missing_database(tmp_path: Path) -> None:
    site = {"hosts": ["*"], "routes": [{"path": "/", "static": {"root": str(tmp_path)}}]}
    with pytest.raises(ConfigError, match=r"stats\.geoip: file .*missing\.mmdb does not exist"):
        config_from_dict({"stats": {"geoip": str(tmp_path / "missing.mmdb")}, "sites": [site]})
    with pytest.raises(ConfigError, match=r"stats: unknown key 'geo_ip'"):
        config_from_dict({"stats": {"geo_ip": "x"}, "sites": [site]})
    loaded = config_from_dict({"sites": [site]})
    assert loaded.config.stats.enabled is True and loaded.config.stats.geoip is None
