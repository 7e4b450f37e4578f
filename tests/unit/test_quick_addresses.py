"""Quick mode's --from and --to forms (those of `caddy reverse-proxy`), and the config the
flags of `bastion proxy` stand for: validated by the same loader as a file, then compiled
to see which certificate source each site gets."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from bastion.cli import build_parser
from bastion.cli.quick import quick_config
from bastion.cli.quick_addresses import FromAddress, QuickAddressError, parse_from, parse_to
from bastion.config import config_from_dict
from bastion.plan.facts import site_facts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a name: HTTPS, on 443 unless a port is given; public names on every interface
        ("api.example.com", FromAddress("https", "api.example.com", None, 443)),
        ("API.Example.com:8443", FromAddress("https", "api.example.com", None, 8443)),
        # local names are served on loopback only
        ("localhost", FromAddress("https", "localhost", "127.0.0.1", 443)),
        ("*.localhost:8443", FromAddress("https", "*.localhost", "127.0.0.1", 8443)),
        # no host, or port 80: plain HTTP
        (":8080", FromAddress("http", None, None, 8080)),
        ("example.com:80", FromAddress("http", "example.com", None, 80)),
        # an IP with a port is a listen address, as in the config file: plain HTTP, any host
        ("127.0.0.1:8080", FromAddress("http", None, "127.0.0.1", 8080)),
        ("[::1]:8080", FromAddress("http", None, "::1", 8080)),
        # an IP alone, or on 443: HTTPS
        ("127.0.0.1", FromAddress("https", "127.0.0.1", "127.0.0.1", 443)),
        ("10.0.0.5:443", FromAddress("https", "10.0.0.5", "10.0.0.5", 443)),
        # a scheme decides
        ("http://localhost:8080", FromAddress("http", "localhost", "127.0.0.1", 8080)),
        ("http://app.example.com", FromAddress("http", "app.example.com", None, 80)),
        ("https://bastion.test:8443/", FromAddress("https", "bastion.test", None, 8443)),
        ("https://127.0.0.1:8443", FromAddress("https", "127.0.0.1", "127.0.0.1", 8443)),
        ("http://127.0.0.1:8080", FromAddress("http", "127.0.0.1", "127.0.0.1", 8080)),
        ("http://:9000", FromAddress("http", None, None, 9000)),
    ],
)
def test_from_forms(text: str, expected: FromAddress) -> None:
    assert parse_from(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("8080", "for every interface write ':8080'"),
        ("ftp://example.com", "expected NAME[:PORT], :PORT"),
        ("https://:8443", "HTTPS needs a name to certify"),
        ("https://example.com/app", "no path, query or user info"),
        ("localhost:99999", "the port must be a number from 1 to 65535, got '99999'"),
        ("::1:8080", "IPv6 address in brackets"),
        ("exa mple.com", "not a valid host name"),
        ("", "--from is empty"),
    ],
)
def test_from_errors_name_the_forms(text: str, message: str) -> None:
    with pytest.raises(QuickAddressError) as info:
        parse_from(text)
    assert message in str(info.value)
    if text:
        assert str(info.value).startswith(f"--from {text!r}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (":8000", "http://127.0.0.1:8000"),
        ("localhost:8000", "http://localhost:8000"),
        ("127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("[::1]:8000", "http://[::1]:8000"),
        ("backend.internal", "http://backend.internal:80"),
        ("api.example.com:443", "https://api.example.com:443"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("https://api.example.com", "https://api.example.com"),
        ("unix:/run/app.sock", "unix:/run/app.sock"),
        ("unix//run/app.sock", "unix:/run/app.sock"),
        ("unix:///run/app.sock", "unix:/run/app.sock"),
    ],
)
def test_to_forms(text: str, expected: str) -> None:
    assert parse_to(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "ftp://x",
            "--to 'ftp://x': expected :PORT, HOST:PORT, http(s)://HOST[:PORT] or unix:/PATH",
        ),
        ("8000", "to reach a port on this machine write ':8000'"),
        ("unix:run/app.sock", "a unix socket path must be absolute"),
        ("http://127.0.0.1:8000/api", "must not have a path"),
        ("localhost:80x", "the port must be a number"),
        ("*.example.com:80", "cannot be a wildcard"),
    ],
)
def test_to_errors_name_the_forms(text: str, message: str) -> None:
    with pytest.raises(QuickAddressError) as info:
        parse_to(text)
    assert message in str(info.value)


def flags(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["proxy", *argv])


def compiled(*argv: str) -> tuple[dict[str, Any], str]:
    """The config the flags build and the certificate source of its site."""
    data, _, _ = quick_config(flags(*argv))
    config = config_from_dict(data, source="<command line>").config
    return data, site_facts(config)[0].tls_mode


def test_public_name_gets_acme_on_443_with_80_for_redirects() -> None:
    data, mode = compiled("--from", "api.example.com", "--to", ":8000")
    assert data["listen"] == {"http": [":80"], "https": [":443"]}
    assert data["sites"][0]["hosts"] == ["api.example.com"]
    assert mode == "acme"


def test_local_names_and_ips_get_the_local_ca() -> None:
    for origin in ("localhost", "*.localhost", "https://127.0.0.1:8443"):
        data, mode = compiled("--from", origin, "--to", ":8000")
        assert mode == "internal", origin
        assert data["listen"]["https"][0].startswith("127.0.0.1:")


def test_internal_certs_keeps_a_public_name_off_acme() -> None:
    _, mode = compiled("--from", "api.example.com", "--internal-certs", "--to", ":8000")
    assert mode == "internal"


def test_private_acme_directory_certifies_test_names() -> None:
    directory = "https://127.0.0.1:14000/dir"
    data, mode = compiled(
        "--from", "https://bastion.test:8443", "--acme-directory", directory, "--to", ":8000"
    )
    assert mode == "acme"
    assert data["acme"] == {"directory": directory}
    assert data["listen"] == {"http": [], "https": [":8443"]}


def test_high_https_port_has_plain_http_only_when_asked() -> None:
    data, _ = compiled("--from", "https://localhost:8443", "--http-port", "8080", "--to", ":1")
    assert data["listen"] == {"http": ["127.0.0.1:8080"], "https": ["127.0.0.1:8443"]}


def test_plain_http_forms_have_no_https_listener_and_no_tls() -> None:
    for origin, listen in (
        ("127.0.0.1:8080", "127.0.0.1:8080"),
        (":9000", ":9000"),
        ("http://localhost:8080", "127.0.0.1:8080"),
    ):
        data, mode = compiled("--from", origin, "--to", ":8000")
        assert data["listen"] == {"http": [listen], "https": []}, origin
        assert mode == "off"


def test_default_from_is_plain_http_on_loopback_8080() -> None:
    data, _ = compiled("--to", ":8000")
    assert data["listen"] == {"http": ["127.0.0.1:8080"], "https": []}
    assert data["sites"][0]["hosts"] == ["*"]


def test_several_to_make_one_pool() -> None:
    data, _ = compiled("--to", ":8000", "--to", "unix:/run/app.sock", "--to", "https://b:8443")
    upstreams = data["sites"][0]["routes"][0]["proxy"]["upstreams"]
    assert upstreams == ["http://127.0.0.1:8000", "unix:/run/app.sock", "https://b:8443"]


def test_http_port_with_plain_http_from_is_refused() -> None:
    with pytest.raises(QuickAddressError, match="--http-port applies to an HTTPS --from"):
        quick_config(flags("--from", ":8080", "--http-port", "8081", "--to", ":1"))
    with pytest.raises(QuickAddressError, match="HTTPS is on that port already"):
        quick_config(flags("--from", "https://localhost:8443", "--http-port", "8443", "--to", ":1"))


def test_acme_flags_map_to_the_acme_section(tmp_path: Any) -> None:
    root = tmp_path / "root.pem"
    root.write_text("x")
    data, _ = compiled(
        "--from", "api.example.com", "--to", ":1",
        "--email", "ops@example.com",
        "--acme-directory", "https://acme-staging-v02.api.letsencrypt.org/directory",
        "--acme-ca-root", str(root),
    )  # fmt: skip
    assert data["acme"] == {
        "email": "ops@example.com",
        "directory": "https://acme-staging-v02.api.letsencrypt.org/directory",
        "trusted_roots": str(root),
    }
