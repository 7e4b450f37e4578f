"""`admin:` in the config: the token is required and long enough, a listener other
machines can reach needs TLS, the address is its own, and errors name their key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastion.config import ConfigError, config_from_dict
from bastion.config.addresses import Address, UnixAddress, is_local

TOKEN = "t" * 24
SITES = [{"hosts": ["*"], "routes": [{"path": "/", "respond": {}}]}]


def load(admin: dict[str, Any], **extra: Any) -> Any:
    return config_from_dict({"sites": SITES, "admin": admin, **extra}).config


def problems(admin: dict[str, Any], **extra: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(admin, **extra)
    return [f"{i.path}: {i.message}" for i in info.value.issues]


def test_off_by_default() -> None:
    assert config_from_dict({"sites": SITES}).config.admin.listen is None


def test_loopback_and_unix_need_no_tls() -> None:
    assert load({"listen": "127.0.0.1:9180", "token": TOKEN}).admin.listen == Address(
        "127.0.0.1", 9180
    )
    assert load({"listen": "unix:/run/bastion/admin.sock", "token": TOKEN}).admin.listen == (
        UnixAddress("/run/bastion/admin.sock")
    )
    assert load({"listen": "[::1]:9180", "token": TOKEN}).admin.tls is None


@pytest.mark.parametrize("listen", [":9180", "0.0.0.0:9180", "10.1.2.3:9180", "[::]:9180"])
def test_a_reachable_listener_without_tls_is_refused(listen: str) -> None:
    (message,) = problems({"listen": listen, "token": TOKEN})
    assert message.startswith("admin: admin.tls is required")
    assert TOKEN not in message


def test_the_token_is_required_and_long_enough() -> None:
    assert problems({"listen": "127.0.0.1:9180"}) == [
        "admin: admin.token is required with admin.listen (write it as ${ENV})"
    ]
    (message,) = problems({"listen": "127.0.0.1:9180", "token": "tiny-tok"})
    assert "at least 16 characters" in message and "tiny-tok" not in message


def test_the_token_from_the_environment_never_shows_in_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", "s3cr3t")
    with pytest.raises(ConfigError) as info:
        load({"listen": "127.0.0.1:9180", "token": "${ADMIN_TOKEN}"})
    assert "s3cr3t" not in str(info.value)


@pytest.mark.parametrize(
    ("extra", "taken"),
    [
        ({"listen": {"http": "127.0.0.1:9180"}}, "listen.http"),
        ({"listen": {"http": [], "https": "127.0.0.1:9180"}}, "listen.https"),
        ({"metrics": {"listen": "127.0.0.1:9180"}}, "metrics.listen"),
    ],
)
def test_the_address_is_its_own(extra: dict[str, Any], taken: str) -> None:
    found = problems({"listen": "127.0.0.1:9180", "token": TOKEN}, **extra)
    assert (
        f"admin.listen: '127.0.0.1:9180' is also {taken}: the admin listener needs an "
        in (found[0])
    )


def test_bad_addresses_and_hosts() -> None:
    (message,) = problems({"listen": "unix:relative.sock", "token": TOKEN})
    assert message.startswith("admin.listen: expected unix:/absolute/path.sock")
    (message,) = problems({"listen": "127.0.0.1:9180", "token": TOKEN, "hosts": ["bad host"]})
    assert message.startswith("admin.hosts[0]:")
    (message,) = problems({"listen": "127.0.0.1:9180", "token": TOKEN, "tokn": 1})
    assert "unknown key 'tokn'" in message


def test_tls_files_make_any_address_fine(tmp_path: Path) -> None:
    from bastion.tls.localca import LocalCA

    leaf = LocalCA(tmp_path).leaf(["localhost"])
    config = load(
        {"listen": ":9180", "token": TOKEN, "tls": {"cert": str(leaf.cert), "key": str(leaf.key)}}
    )
    assert config.admin.tls is not None


def test_is_local() -> None:
    assert is_local(Address("127.0.0.2", 1)) and is_local(Address("localhost", 1))
    assert is_local(Address("::1", 1)) and is_local(UnixAddress("/x"))
    assert not is_local(Address(None, 1)) and not is_local(Address("192.168.1.1", 1))
