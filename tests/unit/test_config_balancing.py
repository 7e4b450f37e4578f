"""Upstream pool settings: forms accepted, and mistakes reported with line and key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config import ConfigError, config_from_dict, load_config


def proxy_of(**proxy: object) -> object:
    route = {"path": "/", "proxy": {"upstreams": ["http://127.0.0.1:8000"], **proxy}}
    config = config_from_dict({"sites": [{"routes": [route]}]}).config
    return config.sites[0].routes[0].proxy


def test_pool_forms_are_parsed() -> None:
    proxy = proxy_of(
        upstreams=[
            "http://10.0.0.1:8000",
            {"url": "http://app-eu.internal:8000", "weight": 2, "zone": "eu"},
            {"url": "http://10.0.9.9:8000", "backup": True},
        ],
        hash={"key": "header:X-User"},
        health={"expect_status": ["200-204", 404], "interval": "500ms"},
        passive={"max_ejected": "25%"},
        retries={"on_status": [502, "503-504"], "budget": 0.1},
    )
    first, eu, spare = proxy.upstreams  # type: ignore[attr-defined]
    assert str(first.url) == "http://10.0.0.1:8000" and first.weight == 1
    assert (eu.weight, eu.zone, eu.backup) == (2, "eu", False)
    assert spare.backup is True
    assert proxy.hash.key == "header:x-user"  # type: ignore[attr-defined]
    assert proxy.health.expect_status == {200, 201, 202, 203, 204, 404}  # type: ignore[attr-defined]
    assert proxy.health.interval == 0.5  # type: ignore[attr-defined]
    assert proxy.passive.max_ejected == 0.25  # type: ignore[attr-defined]
    assert proxy.retries.on_status == {502, 503, 504}  # type: ignore[attr-defined]
    assert proxy.retries.budget == 0.1  # type: ignore[attr-defined]


def test_pool_mistakes_point_at_their_line(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_text(
        """\
sites:
  - routes:
      - path: /
        proxy:
          upstreams:
            - {url: "http://127.0.0.1:8000", weight: 0}
            - "ftp://x"
          balance: fastest
          hash: {key: "query:id"}
          passive: {max_ejected: 150%}
          retries: {on_status: [600]}
          max_pending: 10
"""
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value).replace(f"{tmp_path}/", "")
    where = "sites[0].routes[0].proxy"
    for expected in (
        f"bastion.yaml:6: {where}.upstreams[0].weight:",
        f"bastion.yaml:7: {where}.upstreams[1]: only http://, https:// and unix: upstreams",
        f"bastion.yaml:8: {where}.balance:",
        f"bastion.yaml:9: {where}.hash.key: expected client_ip, path, header:NAME or cookie:NAME",
        f"bastion.yaml:10: {where}.passive.max_ejected: a share must be between 0% and 100%",
        f"bastion.yaml:11: {where}.retries.on_status: status codes must be 100-599",
        f"bastion.yaml:12: {where}.max_pending: max_pending needs max_connections",
    ):
        assert expected in text, text
