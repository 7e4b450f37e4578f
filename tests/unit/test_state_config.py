"""The ``state:`` section: Redis forms, errors with file, line and key, secrets kept out of
messages and logs, and redis-py left unloaded by a gateway that does not use it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bastion.config import ConfigError, load_config
from bastion.config.state_models import RedisCluster, RedisSentinel
from bastion.config.state_values import redis_target

SITE = """\
sites:
  - hosts: ["*"]
    routes:
      - path: /
        respond: {status: 200}
        rate_limits: [{rate: 10/m}]
"""


def errors(tmp_path: Path, state: str) -> list[str]:
    path = tmp_path / "bastion.yaml"
    path.write_text(state + SITE)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value).replace(f"{tmp_path}/", "").splitlines()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("http://127.0.0.1:6379", "unsupported scheme http://: expected redis://host:port/db"),
        ("127.0.0.1:6379", "unsupported scheme"),
        ("redis://", "no host in the Redis URL"),
        ("redis://127.0.0.1:notaport/0", "not a Redis URL"),
        ("redis://127.0.0.1:6379/zero", "the path of a Redis URL is the database number"),
        ("unix://relative.sock", "a unix:// URL needs an absolute path"),
        ("7", "expected a URL"),
    ],
)
def test_a_bad_redis_url_is_reported_at_its_line(tmp_path: Path, value: str, message: str) -> None:
    lines = errors(tmp_path, f"listen: {{http: 127.0.0.1:8080}}\nstate:\n  redis: {value}\n")
    assert len(lines) == 1, lines
    assert lines[0].startswith("bastion.yaml:3: state.redis: "), lines
    assert message in lines[0]


def test_a_password_in_a_bad_url_is_not_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_PW", "hunter2-secret")
    lines = errors(tmp_path, "state: {redis: 'http://:${REDIS_PW}@db.internal:6379/0'}\n")
    assert lines[0].startswith("bastion.yaml:1: state.redis: unsupported scheme")
    assert "hunter2-secret" not in "\n".join(lines)


def test_other_state_keys_are_checked(tmp_path: Path) -> None:
    lines = errors(
        tmp_path,
        "state:\n"
        "  redis: {sentinel: [localhost], service: main}\n"
        "  key_prefix: 'a{b}'\n"
        "  breaker: {failures: 0}\n"
        "  instances: 0\n",
    )
    assert lines == [
        "bastion.yaml:2: state.redis.sentinel.sentinel[0]: expected host:port, got 'localhost'",
        "bastion.yaml:3: state.key_prefix: may not contain { or } (the keys' hash tag follows it)",
        "bastion.yaml:4: state.breaker.failures: must be at least 1, got 0",
        "bastion.yaml:5: state.instances: must be at least 1, got 0",
    ]


def test_the_forms_and_how_logs_name_them(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_text(
        "state: {redis: 'redis://user:pw@[::1]:6380/2', timeout: 20ms}\n"
        + SITE.replace("rate: 10/m}", "rate: 10/m, on_store_down: deny}")
    )
    config = load_config(path).config
    assert config.state.timeout == 0.02
    assert config.sites[0].routes[0].rate_limits[0].on_store_down == "deny"
    assert config.state.redis is not None
    assert redis_target(config.state.redis) == "redis://[::1]:6380/2"  # no user, no password
    assert redis_target("unix:///run/redis.sock") == "unix:///run/redis.sock"
    sentinel = RedisSentinel(sentinel=["10.0.0.1:26379"], service="main", password="x")
    assert redis_target(sentinel) == "sentinel main via 10.0.0.1:26379"
    assert redis_target(RedisCluster(cluster=["a:7000", "b:7000"])) == "cluster via a:7000, b:7000"


_PROBE = """
import sys
from bastion.config import load_config
from bastion.plan import compile_plan
from bastion.proxy.pool import PoolRegistry
import asyncio
config = load_config(sys.argv[1]).config
compile_plan(config, PoolRegistry(asyncio.new_event_loop()))
print("redis" in sys.modules, "hiredis" in sys.modules)
"""


@pytest.mark.parametrize("with_redis", [False, True])
def test_redis_py_is_imported_only_with_state_redis(tmp_path: Path, with_redis: bool) -> None:
    path = tmp_path / "bastion.yaml"
    state = "state: {redis: 'redis://127.0.0.1:1/0'}\n" if with_redis else ""
    quota = "        quotas: [{limit: 5, per: day}]\n"
    path.write_text(f"data_dir: {tmp_path / 'data'}\n{state}{SITE}{quota}")
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert out.stdout.split() == ([str(with_redis)] * 2)
