"""Config of the auth policies: clear errors with line and key path, secrets never shown
(that every key is documented: test_config_docs)."""

from __future__ import annotations

from pathlib import Path

import bcrypt
import pytest

from bastion.config import ConfigError, load_config


def errors(tmp_path: Path, auth: str, env: dict[str, str] | None = None) -> str:
    path = tmp_path / "bastion.yaml"
    path.write_text(
        "sites:\n"
        "  - routes:\n"
        "      - path: /\n"
        "        respond: {body: x}\n"
        f"        auth: {auth}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value).replace(f"{tmp_path}/", "")


def test_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = errors(tmp_path, "{api_keys: {}, forward: {url: 'http://a'}}")
    assert (
        "bastion.yaml:5: sites[0].routes[0].auth: several methods are set (api_keys, forward): "
        "add satisfy: any to let a request pass with any one of them (requiring all of them "
        "is not supported)"
    ) in out
    assert "give one of api_keys, jwt, basic or forward" in errors(tmp_path, "{}")
    assert "'any'" in errors(tmp_path, "{api_keys: {}, jwt: {algorithms: [ES256], "
                                        "jwks_url: 'https://a/'}, satisfy: all}")  # fmt: skip
    assert "expected a header field name" in errors(tmp_path, "{consumer_header: 'X Bad'}")
    out = errors(tmp_path, "{forward: {url: 'http://a', copy_headers: [Content-Length]}}")
    assert "auth.forward.copy_headers[0]: Content-Length is set by the gateway" in out
    assert "query parameter name" in errors(tmp_path, "{api_keys: {query: 'a b'}}")
    assert "does not exist" in errors(tmp_path, "{jwt: {algorithms: [RS256], key_file: nope.pem}}")
    assert "give users or users_file" in errors(tmp_path, "{basic: {}}")
    assert "http:// or https://" in errors(tmp_path, "{forward: {url: 'tcp://x'}}")
    assert "realm" in errors(tmp_path, "{basic: {users: {}, realm: 'a\"b'}}")
    # a secret's value never appears in an error
    monkeypatch.setenv("WEAK", "weak-secret-value")
    out = errors(tmp_path, "{jwt: {algorithms: [HS256], secret: '${WEAK}'}}")
    assert "at least 32 bytes" in out and "weak-secret-value" not in out
    monkeypatch.setenv("HASH", "plain-password-123")
    out = errors(tmp_path, "{basic: {users: {alice: '${HASH}'}}}")
    assert "bcrypt" in out and "plain-password-123" not in out


def test_users_file_line_numbers(tmp_path: Path) -> None:
    good = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    (tmp_path / "users").write_text(f"# comment\nalice:{good}\nbob:{{SHA}}abc\n")
    out = errors(tmp_path, "{basic: {users_file: users}}")
    assert "users_file line 3 (bob)" in out and "abc" not in out.split("(bob)")[1]
