"""Reading only what an operator command needs of a config file (`config.partial`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config import ConfigError
from bastion.config.partial import certs_config, operator_settings

TEXT = """\
listen: {http: "127.0.0.1:8080", https: "127.0.0.1:8443"}
data_dir: ./data
admin:
  listen: 127.0.0.1:9180
  token: ${PARTIAL_ADMIN_TOKEN}
sites:
  - hosts: [api.example.com, localhost]
    routes:
      - path: /
        auth: {jwt: {secret: "${PARTIAL_JWT}", algorithms: [HS256]}}
        proxy: {upstreams: ["${PARTIAL_UPSTREAM}"]}
workers: ${PARTIAL_WORKERS}
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("PARTIAL_ADMIN_TOKEN", "PARTIAL_JWT", "PARTIAL_UPSTREAM", "PARTIAL_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "bastion.yaml"
    path.write_text(TEXT)
    return path


def test_settings_ignore_what_they_do_not_read(config: Path) -> None:
    settings = operator_settings(config)
    assert settings.data_dir == str(config.parent / "data")
    assert settings.pid_file is None
    assert settings.admin is None  # its token is not set here
    [problem] = settings.admin_problems
    assert str(problem) == (
        f"{config}:5: admin.token: environment variable PARTIAL_ADMIN_TOKEN is not set"
    )


def test_the_admin_section_with_its_token(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTIAL_ADMIN_TOKEN", "a-token-long-enough-for-the-admin")
    admin = operator_settings(config).admin
    assert admin is not None and admin.token is not None
    assert admin.token.get_secret_value() == "a-token-long-enough-for-the-admin"


def test_certs_read_sites_names_and_tls_only(config: Path) -> None:
    read = certs_config(config, ordering=False)
    assert read.sites[0].hosts == ["api.example.com", "localhost"]
    assert read.data_dir == str(config.parent / "data")


def test_a_problem_in_what_is_read_has_its_line(config: Path) -> None:
    config.write_text(TEXT.replace("data_dir: ./data", "data_dir: [1]"))
    with pytest.raises(ConfigError) as caught:
        operator_settings(config)
    assert str(caught.value).startswith(f"{config}:2: data_dir: ")


def test_a_problem_under_state_is_named_at_its_own_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_text('data_dir: /tmp/x\nstate:\n  redis: "http://nope"\nsites: []\n')
    with pytest.raises(ConfigError) as caught:
        operator_settings(path)
    (issue,) = caught.value.issues
    assert (issue.line, issue.path) == (3, "state.redis"), issue
