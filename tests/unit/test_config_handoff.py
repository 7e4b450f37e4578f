"""A config validated in a child process and handed to the serving process as plain
objects reads exactly like the validated models, and needs neither pydantic nor PyYAML."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from bastion.config import ConfigError, LoadedConfig, config_from_dict, load_config
from bastion.config.child import freeze, handed_over
from bastion.config.handoff import (
    MARK,
    config_from_dict_apart,
    load_config_apart,
    read_answer,
    stamp,
)
from bastion.config.plain import ConfigNode, Secret, fingerprint, is_a, replaced

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# a config with the sections whose models have properties, secrets and unions
RICH = """\
listen: {http: "127.0.0.1:18080"}
admin: {listen: "unix:/tmp/bastion-handoff-test.sock", token: "${HANDOFF_ADMIN_TOKEN}"}
state:
  redis: {sentinel: ["127.0.0.1:26379"], service: main}
  encryption_key: "${HANDOFF_KEY}"
alerts:
  channels:
    hook: {webhook: {url: "http://127.0.0.1:9/hook"}}
    mail: {email: {host: smtp.example.com, sender: a@example.com, to: [b@example.com]}}
  rules:
    errors: {kind: error_rate, threshold: 5%, evaluation_periods: 3}
    slow: {kind: latency, threshold: 800ms, datapoints_to_alarm: 2, evaluation_periods: 4}
sites:
  - hosts: ["api.example.com"]
    security_headers: {hsts: {max_age: 1h, preload: true}, csp: "default-src 'self'"}
    headers:
      request: {set: {X-From: bastion}, inject: {Authorization: "Bearer ${HANDOFF_TOKEN}"}}
    routes:
      - path: /limited/
        rate_limits: [{rate: 10/s, key: client_ip}]
        quotas: [{limit: 1000, per: day}]
        auth:
          satisfy: any
          api_keys: {}
          jwt: {algorithms: [HS256], secret: "${HANDOFF_JWT}"}
        proxy: {upstreams: ["http://127.0.0.1:18000", "http://127.0.0.1:18001"]}
      - path: /
        security_headers: false
        cors: {origins: ["https://app.example.com"]}
        ip_rules: {allow: ["10.0.0.0/8"]}
        cache: {ttl: 1m}
        proxy: {upstreams: ["http://127.0.0.1:18000"]}
"""

_ENV = {
    "HANDOFF_ADMIN_TOKEN": "admin-token-0123456789abcdef",
    "HANDOFF_KEY": "00" * 32,
    "HANDOFF_TOKEN": "secret-token-value-42",
    "HANDOFF_JWT": "a-jwt-secret-of-at-least-32-bytes-0123456789",
    "S3_ACCESS_KEY_ID": "AKIAEXAMPLEEXAMPLE",
    "S3_SECRET_ACCESS_KEY": "secret/secret/secret/secret/secret/secret",
    "SAAS_TOKEN": "saas-token-value",
}


@pytest.fixture
def configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    for name, value in _ENV.items():
        monkeypatch.setenv(name, value)
    rich = tmp_path / "rich.yaml"
    rich.write_text(RICH)
    return [rich, *sorted(EXAMPLES.glob("*.yaml"))]


def _walk(value: Any, path: str, out: list[tuple[str, str]]) -> None:
    """Every leaf of a config, model or node, as (key path, what it is)."""
    if isinstance(value, BaseModel | ConfigNode):
        out.append((path, f"model {type(value).__name__}"))
        for key, field in value.__dict__.items():
            _walk(field, f"{path}.{key}", out)
    elif isinstance(value, SecretStr | Secret):
        out.append((path, f"secret {value.get_secret_value()!r} shown as {value}"))
    elif isinstance(value, dict):
        for key, item in value.items():
            _walk(item, f"{path}[{key!r}]", out)
    elif isinstance(value, list | tuple):
        out.append((path, f"{type(value).__name__} of {len(value)}"))
        for i, item in enumerate(value):
            _walk(item, f"{path}[{i}]", out)
    else:
        out.append((path, f"{type(value).__name__} {value!r}"))


def _leaves(value: Any) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    _walk(value, "config", out)
    return out


def _models(value: Any) -> list[Any]:
    found: list[Any] = []
    if isinstance(value, BaseModel | ConfigNode):
        found.append(value)
        for field in value.__dict__.values():
            found += _models(field)
    elif isinstance(value, dict):
        for item in value.values():
            found += _models(item)
    elif isinstance(value, list | tuple):
        for item in value:
            found += _models(item)
    return found


def _behaviour(model: type[BaseModel]) -> set[str]:
    """The public names a model class has besides its fields and pydantic's own."""
    names: set[str] = set()
    for cls in type.mro(model):
        if cls.__module__.startswith("bastion."):
            names |= {n for n in vars(cls) if not n.startswith("_")}
    return names - set(model.model_fields) - {"model_config"}


def test_every_model_property_is_known_to_the_nodes() -> None:
    """A property or method a model gains must reach its node: through a mixin of
    ``bastion.config.plain`` (the parity test below calls each on real configs)."""
    import bastion.config.loader  # noqa: F401  (defines every model)

    def subclasses(cls: type) -> list[type]:
        return [c for s in cls.__subclasses__() for c in (s, *subclasses(s))]

    models = [m for m in subclasses(BaseModel) if m.__module__.startswith("bastion.config.")]
    assert len({m.__name__ for m in models}) >= 60
    found = {m.__name__: sorted(_behaviour(m)) for m in models if _behaviour(m)}
    assert found == {"AlertChannel": ["type"], "AlertRule": ["needed"], "Auth": ["methods"]}


def test_the_handed_over_config_reads_as_the_models(configs: list[Path]) -> None:
    """Every field of every model, secrets included, is the node's; the properties code
    reads off a model (an alert channel's type, a rule's N, an auth's methods) agree; and
    ``is_a`` answers for a node as ``isinstance`` does for its model."""
    for path in configs:
        loaded = load_config(path)
        plain = freeze(loaded.config)
        assert _leaves(plain) == _leaves(loaded.config), path
        models, nodes = _models(loaded.config), _models(plain)
        assert [type(n).__name__ for n in nodes] == [type(m).__name__ for m in models]
        names = {type(m).__name__ for m in models} | {"RateLimit", "TlsFiles", "RedisSentinel"}
        for model, node in zip(models, nodes, strict=True):
            for name in names:
                expected = any(c.__name__ == name for c in type(model).__mro__)
                assert is_a(node, name) == is_a(model, name) == expected
            assert node == freeze(model)
            for name in _behaviour(type(model)):  # every property and method code may read
                mine, theirs = getattr(node, name), getattr(model, name)
                assert (mine() if callable(mine) else mine) == (
                    theirs() if callable(theirs) else theirs
                ), (type(model).__name__, name)
    rich = freeze(load_config(configs[0]).config)
    assert rich.alerts.channels["mail"].type == "email"
    assert rich.alerts.rules["slow"].needed == 2
    assert rich.sites[0].routes[0].auth.methods() == ["api_keys", "jwt"]


def test_a_node_is_frozen_compares_and_copies_like_a_model(configs: list[Path]) -> None:
    loaded = load_config(configs[0])
    model = loaded.config.sites[0].routes[1].proxy.timeouts
    node = freeze(model)
    with pytest.raises(AttributeError):
        node.connect = 1.0
    assert hash(node) == hash(freeze(model)) and node == freeze(model)
    assert node != freeze(replaced(model, connect=model.connect + 1))
    changed = replaced(node, connect=99.0)
    assert changed.connect == 99.0 and node.connect == model.connect
    assert fingerprint(node) == fingerprint(freeze(model))
    assert fingerprint(node) != fingerprint(changed)
    secret = freeze(loaded.config.admin).token
    assert "admin-token" not in repr(secret) + str(secret) + fingerprint(freeze(loaded.config))


def test_the_serving_process_unpickles_it_without_pydantic_or_yaml(
    configs: list[Path],
) -> None:
    """The answer the child writes unpickles in a process where importing pydantic or
    PyYAML fails, and its JSON view is the model's dump."""
    for path in configs:
        loaded = load_config(path)
        data = pickle.dumps(("ok", handed_over(loaded)))
        probe = (
            "import pickle, sys\n"
            "class Refuse:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('pydantic', 'pydantic_core', 'yaml'):\n"
            "            raise ImportError('refused: ' + name)\n"
            "sys.meta_path.insert(0, Refuse())\n"
            "kind, loaded = pickle.loads(sys.stdin.buffer.read())\n"
            "print(kind, type(loaded.config).__module__, len(loaded.as_json()))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", probe], input=data, capture_output=True, timeout=60
        )
        assert done.returncode == 0, done.stderr.decode()
        assert done.stdout.split() == [b"ok", b"bastion.config.plain", b"%d" % len(
            loaded.config.model_dump(mode="json"))]
        assert handed_over(loaded).as_json() == loaded.config.model_dump(mode="json")


def test_load_config_apart_gives_the_config_or_the_same_errors(
    tmp_path: Path, configs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = load_config_apart(configs[0])
    assert isinstance(loaded, LoadedConfig) and isinstance(loaded.config, ConfigNode)
    assert loaded.source == configs[0].resolve()
    assert loaded.secrets == load_config(configs[0]).secrets
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: {http: 127.0.0.1:8080}\nsites:\n  - hosts: ['*']\n    rutes: []\n")
    with pytest.raises(ConfigError) as apart:
        load_config_apart(bad)
    with pytest.raises(ConfigError) as here:
        load_config(bad)
    assert str(apart.value) == str(here.value)
    assert "bad.yaml:4" in str(apart.value)
    # a secret the child's environment lacks is the child's error, with its line
    monkeypatch.delenv("HANDOFF_TOKEN")
    with pytest.raises(ConfigError, match="HANDOFF_TOKEN is not set"):
        load_config_apart(configs[0])


def test_a_built_config_is_validated_apart_with_the_same_errors() -> None:
    """Quick mode's config (built from the command line) goes through the child too."""
    data = {"sites": [{"hosts": ["*"], "routes": [{"path": "/", "respond": {"status": 204}}]}]}
    loaded = load_config_apart_built(data)
    assert isinstance(loaded.config, ConfigNode) and loaded.source is None
    assert loaded.config.sites[0].routes[0].respond.status == 204
    bad = {"sites": [{"hosts": ["*"], "routes": [{"path": "/", "respond": {"status": 99}}]}]}
    with pytest.raises(ConfigError) as apart:
        load_config_apart_built(bad)
    with pytest.raises(ConfigError) as here:
        config_from_dict(bad, source="<command line>")
    assert str(apart.value) == str(here.value) and "respond.status" in str(here.value)


def load_config_apart_built(data: dict[str, Any]) -> LoadedConfig:
    return config_from_dict_apart(data, source="<command line>")


def test_a_child_that_fails_without_answering_is_a_config_error(
    tmp_path: Path, configs: list[Path], monkeypatch: pytest.MonkeyPatch, capfd: Any
) -> None:
    """The running config is then kept (a reload catches ConfigError); the child's
    traceback goes to the gateway's stderr, not into the message."""
    broken = tmp_path / "broken" / "pydantic"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise RuntimeError('pydantic broke: not a secret')\n")
    monkeypatch.syspath_prepend(str(broken.parent))  # the child gets this process's path
    with pytest.raises(ConfigError) as failed:
        load_config_apart(configs[0])
    message = str(failed.value)
    assert "ended without an answer (exit status 1" in message
    assert "pydantic broke" not in message
    assert "pydantic broke" in capfd.readouterr().err


def test_an_answer_that_cannot_be_used_is_a_config_error() -> None:
    """Garbage, no answer, a wrong shape or another version's config code: each is a
    ConfigError (a reload keeps the running config), never another exception."""
    mine = MARK + stamp().encode()
    good = mine + pickle.dumps(("error", ConfigError([])))
    for out in (b"", b"noise", MARK, mine + b"garbage", mine + pickle.dumps(("ok", 42))):
        with pytest.raises(ConfigError, match="ended without an answer"):
            read_answer("x.yaml", 0, out)
    with pytest.raises(ConfigError, match="killed by signal 9"):
        read_answer("x.yaml", -9, good)
    # another version's answer is refused before any of it is unpickled
    with pytest.raises(ConfigError, match="restart it instead of reloading"):
        read_answer("x.yaml", 0, MARK + b"0123456789abcdef" + b"not even a pickle")
    with pytest.raises(ConfigError) as answered:  # what a site hook printed first is skipped
        read_answer("x.yaml", 0, b"hello from a .pth file\n" + good)
    assert answered.value.issues == []


def test_the_child_imports_nothing_from_the_current_directory(
    tmp_path: Path, configs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It runs with this process's import path less the current directory, and ``-P``:
    a yaml.py or json.py where the gateway was started (quick mode is run from a project
    directory) is not loaded, even under ``python -m bastion``, which puts that directory
    first on the path."""
    for name in ("json.py", "yaml.py", "typing_extensions.py"):
        (tmp_path / name).write_text("raise SystemExit('imported from the current directory')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # as `python -m` does
    assert isinstance(load_config_apart(configs[1]).config, ConfigNode)


def test_a_child_that_hangs_is_killed_and_the_reload_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``${file:...}`` that never answers (here a FIFO nobody writes) holds neither a
    start nor a worker's reload: the child is killed after ``TIMEOUT``."""
    import asyncio

    from bastion.config import handoff
    from bastion.server.worker import _load_config_apart

    fifo = tmp_path / "token"
    os.mkfifo(fifo)
    config = tmp_path / "bastion.yaml"
    config.write_text(
        f"admin: {{listen: 127.0.0.1:9, token: '${{file:{fifo}}}'}}\n"
        "sites: [{hosts: ['*'], routes: [{path: /, respond: {status: 204}}]}]\n"
    )
    monkeypatch.setattr(handoff, "TIMEOUT", 1.0)
    with pytest.raises(ConfigError, match="could not be validated in 1 s"):
        load_config_apart(config)
    with pytest.raises(ConfigError, match="could not be validated in 1 s"):
        asyncio.run(_load_config_apart(config))
