"""``${ENV}`` and ``${file:...}`` substitution: values, escapes, errors, and no leaked secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config import ConfigError, LoadedConfig, config_from_dict, load_config

TOKEN = "s3cr3t-Token-value"
FILE_SECRET = "from-a-file-9f8e"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bastion.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, body: str) -> LoadedConfig:
    text = f"sites:\n  - routes:\n      - path: /\n        respond: {{body: '{body}'}}\n"
    return load_config(write(tmp_path, text))


def body_of(loaded: LoadedConfig) -> str:
    respond = loaded.config.sites[0].routes[0].respond
    assert respond is not None
    return respond.body


def test_env_and_file_substitution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAAS_TOKEN", TOKEN)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "key").write_text(FILE_SECRET + "\n", encoding="utf-8")

    loaded = load(tmp_path, "Bearer ${SAAS_TOKEN}; key=${file:secrets/key}")

    assert body_of(loaded) == f"Bearer {TOKEN}; key={FILE_SECRET}"
    assert loaded.secrets == frozenset({TOKEN, FILE_SECRET})


def test_absolute_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "abs.txt"
    secret.write_text(FILE_SECRET + "\r\n", encoding="utf-8")
    loaded = load(tmp_path, f"${{file:{secret}}}")
    assert body_of(loaded) == FILE_SECRET
    assert loaded.secrets == frozenset({FILE_SECRET})


def test_dollar_dollar_escapes_a_literal_placeholder(tmp_path: Path) -> None:
    loaded = load(tmp_path, "cost: $5, literal $${HOME} and $$ alone")
    assert body_of(loaded) == "cost: $5, literal ${HOME} and $$ alone"
    assert loaded.secrets == frozenset()


def test_substituted_values_are_then_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND_PORT", "8123")
    monkeypatch.setenv("READ_TIMEOUT", "90s")
    route = {
        "path": "/",
        "proxy": {
            "upstreams": ["http://127.0.0.1:${BACKEND_PORT}"],
            "timeouts": {"read": "${READ_TIMEOUT}"},
        },
    }
    loaded = config_from_dict({"sites": [{"routes": [route]}]})
    proxy = loaded.config.sites[0].routes[0].proxy
    assert proxy is not None
    assert proxy.upstreams[0].url.port == 8123
    assert proxy.timeouts.read == 90.0
    assert loaded.secrets == frozenset({"8123", "90s"})


def test_missing_env_var_is_reported_at_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SAAS_TOKEN", raising=False)
    text = """\
sites:
  - routes:
      - path: /
        proxy:
          upstreams: ["http://${SAAS_TOKEN}:80"]
"""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    # Only the substitution problem: the placeholder left in the URL is not reported again.
    assert [(i.line, i.path, i.message) for i in info.value.issues] == [
        (5, "sites[0].routes[0].proxy.upstreams[0]", "environment variable SAAS_TOKEN is not set")
    ]


def test_unreadable_file_and_bad_placeholders(tmp_path: Path) -> None:
    text = """\
sites:
  - routes:
      - {path: /a, respond: {body: "${file:missing.txt}"}}
      - {path: /b, respond: {body: "${not a name}"}}
      - {path: /c, respond: {body: "open ${ never closed"}}
"""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert [(i.line, i.message) for i in info.value.issues] == [
        (3, "cannot read secret file missing.txt: No such file or directory"),
        (
            4,
            "invalid placeholder '${not a name}': use ${NAME} for an environment variable "
            "or ${file:path} for a file (write $${ for a literal ${)",
        ),
        (5, "unterminated '${' (write $${ for a literal ${)"),
    ]


def test_secrets_never_appear_in_error_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAAS_TOKEN", TOKEN)
    (tmp_path / "key").write_text(FILE_SECRET, encoding="utf-8")
    text = """\
listen:
  http: "${SAAS_TOKEN}"
sites:
  - routes:
      - path: "/${file:key}"
        proxy:
          upstreams: ["http://${SAAS_TOKEN}/x"]
          timeouts: {read: "${file:key}"}
        methods: ["${SAAS_TOKEN} x"]
        unknown: "${SAAS_TOKEN}"
"""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    error = info.value
    report = str(error)
    assert len(error.issues) == 5
    assert TOKEN not in report
    assert FILE_SECRET not in report
    assert all(TOKEN not in i.message and FILE_SECRET not in i.message for i in error.issues)
    assert "<redacted>" in report
    assert [(i.line, i.path) for i in error.issues] == [
        (2, "listen.http[0]"),
        (7, "sites[0].routes[0].proxy.upstreams[0]"),
        (8, "sites[0].routes[0].proxy.timeouts.read"),
        (9, "sites[0].routes[0].methods[0]"),
        (10, "sites[0].routes[0]"),
    ]


def test_keys_are_not_substituted() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"sites": [], "${X}": 1})
    assert [i.message for i in info.value.issues] == [
        "must not be empty",
        "unknown key '${X}' (expected one of: listen, sites, limits, timeouts, access_log, http2, "
        "trusted_proxies, workers, shutdown_timeout, pid_file, watch, data_dir, acme, tls, "
        "cache, metrics, stats, alerts, admin, tracing, state, log_level)",
    ]


@pytest.mark.parametrize(
    "secret",
    [
        "a\\b'quote\"-backslash",  # repr() would escape it: the escaped form must not leak
        "long-" + "x" * 120,  # messages shorten long values: no prefix of it may leak
    ],
)
def test_escaped_or_shortened_secrets_do_not_leak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    monkeypatch.setenv("ODD_SECRET", secret)
    text = 'sites:\n  - routes:\n      - path: /\n        proxy: {upstreams: ["${ODD_SECRET}"]}\n'
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    [issue] = info.value.issues
    assert issue.message == (
        "only http://, https:// and unix: upstreams are supported; expected http://host:port, "
        "https://host:port or unix:/absolute/path.sock, got '<redacted>'"
    )
