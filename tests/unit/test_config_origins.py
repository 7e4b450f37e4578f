"""Config checks of https:// upstream TLS settings and of the s3: action: files that do not
load, names and credentials, each reported with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config import ConfigError, load_config
from bastion.config.addresses import parse_upstream


def errors(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "bastion.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value).replace(f"{tmp_path}/", "").splitlines()


def loads(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "bastion.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(path).config


@pytest.fixture(autouse=True)
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))


def test_https_upstreams_parse_with_default_port() -> None:
    address = parse_upstream("https://API.example.com")
    assert (address.scheme, address.host, address.port) == ("https", "api.example.com", 443)
    assert address.authority == "api.example.com"
    assert parse_upstream("https://[::1]:8443").authority == "[::1]:8443"
    assert parse_upstream("https://10.0.0.1:443").authority == "10.0.0.1"


def test_tls_files_that_do_not_exist_or_load(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    text = """\
sites:
  - routes:
      - path: /a/
        proxy:
          upstreams: ["https://api.example.com"]
          tls:
            ca: missing-ca.pem
      - path: /b/
        proxy:
          upstreams: ["https://api.example.com"]
          tls: {ca: junk.pem}
      - path: /c/
        proxy:
          upstreams: ["https://api.example.com"]
          tls: {client_cert: junk.pem, client_key: junk.pem}
      - path: /d/
        proxy:
          upstreams: ["http://127.0.0.1:8000"]
          tls: {verify: false}
"""
    lines = errors(tmp_path, text)
    assert lines[0] == (
        "bastion.yaml:7: sites[0].routes[0].proxy.tls.ca: file missing-ca.pem does not exist"
    )
    assert lines[1].startswith("bastion.yaml:11: sites[0].routes[1].proxy.tls: ca: cannot load ")
    assert "as a PEM CA bundle" in lines[1]
    assert lines[2].startswith(
        "bastion.yaml:15: sites[0].routes[2].proxy.tls: cannot load the client certificate "
    )
    assert lines[3] == (
        "bastion.yaml:17: sites[0].routes[3].proxy: "
        "tls only applies to https:// upstreams, and this proxy has none"
    )
    assert len(lines) == 4


def test_bucket_names_and_endpoints(tmp_path: Path) -> None:
    text = """\
sites:
  - routes:
      - path: /
        s3:
          bucket: My_Bucket
          endpoint: ftp://storage.example.com
          access_key_id: AKIA
          secret_access_key: s3cr3t-value
"""
    lines = errors(tmp_path, text)
    assert lines[0].startswith("bastion.yaml:5: sites[0].routes[0].s3.bucket: expected a bucket")
    assert lines[1].startswith("bastion.yaml:6: sites[0].routes[0].s3.endpoint: only http://")
    assert not any("s3cr3t-value" in line for line in lines)


def test_missing_credentials_say_where_they_were_looked_for(tmp_path: Path) -> None:
    text = "sites:\n  - routes:\n      - path: /\n        s3: {bucket: my-site}\n"
    [line] = errors(tmp_path, text)
    assert line.startswith("bastion.yaml:4: sites[0].routes[0].s3: no credentials: ")
    assert "AWS_ACCESS_KEY_ID" in line and "no-credentials" in line


def test_half_given_credentials_are_an_error(tmp_path: Path) -> None:
    text = "sites:\n  - routes:\n      - path: /\n        s3: {bucket: my-site, access_key_id: A}\n"
    [line] = errors(tmp_path, text)
    assert line.endswith("access_key_id and secret_access_key must be given together")


def test_credentials_from_environment_then_shared_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "sites:\n  - routes:\n      - path: /\n        s3: {bucket: my-site}\n"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ENVKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
    s3 = loads(tmp_path, text).sites[0].routes[0].s3
    assert s3.access_key_id == "ENVKEY"
    assert s3.secret_access_key.get_secret_value() == "envsecret"
    assert "envsecret" not in repr(s3)

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    shared = tmp_path / "credentials"
    shared.write_text(
        "[default]\naws_access_key_id = DEFKEY\naws_secret_access_key = defsecret\n"
        "[deploy]\naws_access_key_id = DEPKEY\naws_secret_access_key = depsecret\n"
        "aws_session_token = deptoken\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(shared))
    assert loads(tmp_path, text).sites[0].routes[0].s3.access_key_id == "DEFKEY"
    monkeypatch.setenv("AWS_PROFILE", "deploy")
    s3 = loads(tmp_path, text).sites[0].routes[0].s3
    assert s3.access_key_id == "DEPKEY"
    assert s3.session_token.get_secret_value() == "deptoken"


def test_strip_prefix_is_allowed_on_s3_routes(tmp_path: Path) -> None:
    text = """\
sites:
  - routes:
      - path: /assets/
        strip_prefix: true
        s3: {bucket: my-site, access_key_id: A, secret_access_key: B, prefix: site/}
"""
    route = loads(tmp_path, text).sites[0].routes[0]
    assert route.strip_prefix and route.s3.prefix == "site/"


def test_client_address_unmaps_ipv4_clients_of_a_dual_stack_listener() -> None:
    from ipaddress import ip_address, ip_network

    from bastion.config.addresses import client_address

    assert client_address("::ffff:127.0.0.1") == ip_address("127.0.0.1")
    assert client_address("::ffff:127.0.0.1") in ip_network("127.0.0.0/8")
    assert client_address("::1") == ip_address("::1")
    assert client_address("10.1.2.3") == ip_address("10.1.2.3")
    assert client_address("unix") is None
