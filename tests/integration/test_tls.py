"""HTTPS through real sockets and real handshakes: local CA, certificate files, SNI,
the TLS version policy, HTTP→HTTPS redirects, HSTS, reload and config errors."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from conftest import Backend, Gateway, free_port, wait_for_port


def tls_config(tmp_path: Path, sites: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    http, https = free_port(), free_port()
    config: dict[str, Any] = {
        "listen": {"http": f"127.0.0.1:{http}", "https": f"127.0.0.1:{https}"},
        "data_dir": str(tmp_path / "data"),
        "access_log": {"format": "off"},
        "sites": sites,
    }
    config.update(extra)
    return config


def https_port(config: dict[str, Any]) -> int:
    return int(config["listen"]["https"].rsplit(":", 1)[1])


def root_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "ca" / "root.crt"


def client_context(cafile: Path | str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cafile))


def peer_names(port: int, server_name: str | None, context: ssl.SSLContext) -> list[str]:
    """Handshake with SNI `server_name`; the certificate's SAN values."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:  # noqa: SIM117
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            cert = tls.getpeercert()
    assert cert is not None
    return [value for _, value in cert.get("subjectAltName", ())]


def tls_get(port: int, name: str, context: ssl.SSLContext, path: str = "/") -> bytes:
    """GET `path` over TLS with SNI and Host `name`; the whole raw response."""
    request = f"GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:  # noqa: SIM117
        with context.wrap_socket(raw, server_hostname=name) as tls:
            tls.sendall(request.encode())
            while chunk := tls.recv(65536):
                data += chunk
    return data


def proxy_site(backend: Backend, hosts: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "hosts": hosts,
        "routes": [{"path": "/", "proxy": {"upstreams": [backend.url]}}],
        **extra,
    }


def make_cert(directory: Path, name: str, rsa_key: bool = False) -> tuple[Path, Path]:
    """A self-signed certificate for `name` (ECDSA P-256, or RSA 2048): (cert file, key
    file)."""
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if rsa_key
        else ec.generate_private_key(ec.SECP256R1())
    )
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


GatewayFactory = Callable[..., Gateway]


def start(gateway: GatewayFactory, config: dict[str, Any]) -> Gateway:
    gw = gateway(config)
    wait_for_port(https_port(config))
    return gw


def test_https_request_verified_against_local_ca(
    tmp_path: Path, backend: Backend, gateway: GatewayFactory
) -> None:
    config = tls_config(tmp_path, [proxy_site(backend, ["localhost"])])
    start(gateway, config)
    port = https_port(config)
    with httpx.Client(verify=client_context(root_path(tmp_path))) as client:
        response = client.get(f"https://localhost:{port}/hello")
    assert response.status_code == 200
    assert response.json()["path"] == "/hello"
    headers = dict(backend.requests[-1]["headers"])
    assert headers["x-forwarded-proto"] == "https"
    assert "strict-transport-security" not in response.headers


def test_two_sites_get_their_own_certificates(
    tmp_path: Path, backend: Backend, gateway: GatewayFactory
) -> None:
    config = tls_config(
        tmp_path,
        [proxy_site(backend, ["one.test"]), proxy_site(backend, ["two.test", "*.two.test"])],
    )
    start(gateway, config)
    port = https_port(config)
    context = client_context(root_path(tmp_path))
    assert peer_names(port, "one.test", context) == ["one.test"]
    assert peer_names(port, "two.test", context) == ["two.test", "*.two.test"]
    # one label under the wildcard is covered, two are not (neither would the certificate)
    assert peer_names(port, "a.two.test", context) == ["two.test", "*.two.test"]
    with pytest.raises(ssl.SSLError):
        peer_names(port, "a.b.two.test", context)


def test_unknown_sni_fails_the_handshake(
    tmp_path: Path, backend: Backend, gateway: GatewayFactory
) -> None:
    config = tls_config(tmp_path, [proxy_site(backend, ["one.test"])])
    start(gateway, config)
    context = client_context(root_path(tmp_path))
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # even a client that accepts anything gets nothing
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        peer_names(https_port(config), "other.test", context)


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_old_tls_versions_are_refused(
    tmp_path: Path, backend: Backend, gateway: GatewayFactory, version: str
) -> None:
    config = tls_config(tmp_path, [proxy_site(backend, ["localhost"])])
    start(gateway, config)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = getattr(ssl.TLSVersion, version)
            context.maximum_version = getattr(ssl.TLSVersion, version)
        context.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pass  # this OpenSSL cannot even offer it: the handshake fails all the same
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        peer_names(https_port(config), "localhost", context)
    # TLS 1.2 is accepted
    modern = client_context(root_path(tmp_path))
    modern.maximum_version = ssl.TLSVersion.TLSv1_2
    assert peer_names(https_port(config), "localhost", modern) == ["localhost"]


def test_certificate_files(tmp_path: Path, backend: Backend, gateway: GatewayFactory) -> None:
    cert, key = make_cert(tmp_path / "files", "files.example.com")
    site = proxy_site(backend, ["files.example.com"], tls={"cert": str(cert), "key": str(key)})
    config = tls_config(tmp_path, [site])
    start(gateway, config)
    port = https_port(config)
    assert peer_names(port, "files.example.com", client_context(cert)) == ["files.example.com"]
    response = tls_get(port, "files.example.com", client_context(cert), "/x")
    assert response.startswith(b"HTTP/1.1 200 ")
    assert backend.requests[-1]["path"] == "/x"
    assert not (tmp_path / "data" / "ca").exists()  # the local CA is not needed here


def test_redirects_from_http(tmp_path: Path, backend: Backend, gateway: GatewayFactory) -> None:
    plain = proxy_site(backend, ["plain.test"], tls="off")
    config = tls_config(tmp_path, [proxy_site(backend, ["localhost", "127.0.0.1"]), plain])
    gw = start(gateway, config)
    port = https_port(config)
    with httpx.Client(follow_redirects=False) as client:
        response = client.get(f"{gw.url}/a/b?x=1", headers={"Host": "localhost"})
        assert response.status_code == 301
        assert response.headers["location"] == f"https://localhost:{port}/a/b?x=1"
        response = client.head(f"{gw.url}/h")
        assert response.status_code == 301
        assert response.headers["location"] == f"https://127.0.0.1:{port}/h"
        response = client.post(f"{gw.url}/form", content=b"data", headers={"Host": "localhost"})
        assert response.status_code == 308
        assert response.headers["location"] == f"https://localhost:{port}/form"
        # a site without TLS is served over plain HTTP
        response = client.get(f"{gw.url}/p", headers={"Host": "plain.test"})
        assert response.status_code == 200
        assert response.json()["path"] == "/p"
    # and redirect-following clients end up at the backend over HTTPS
    with httpx.Client(verify=client_context(root_path(tmp_path))) as client:
        response = client.post(
            f"http://localhost:{gw.port}/form", content=b"data", follow_redirects=True
        )
    assert response.status_code == 200
    assert response.json()["method"] == "POST"
    assert response.json()["body_len"] == 4


def test_hsts_only_where_configured(
    tmp_path: Path, backend: Backend, gateway: GatewayFactory
) -> None:
    sites = [
        proxy_site(backend, ["localhost"], hsts=True),
        proxy_site(
            backend,
            ["strict.test"],
            hsts={"max_age": "180d", "include_subdomains": True, "preload": True},
        ),
        proxy_site(backend, ["loose.test"]),
    ]
    config = tls_config(tmp_path, sites)
    start(gateway, config)
    port = https_port(config)
    context = client_context(root_path(tmp_path))
    with httpx.Client(verify=context) as client:
        response = client.get(f"https://localhost:{port}/")
        assert response.headers["strict-transport-security"] == "max-age=31536000"

    strict = tls_get(port, "strict.test", context)
    assert b"\r\nStrict-Transport-Security: max-age=15552000; includeSubDomains; preload\r\n" in (
        strict
    )
    loose = tls_get(port, "loose.test", context)
    assert loose.startswith(b"HTTP/1.1 200 ")
    assert b"strict-transport-security" not in loose.lower()


def test_reload_switches_the_certificate_without_dropping_the_listener(
    tmp_path: Path, backend: Backend, gateway: GatewayFactory
) -> None:
    first, first_key = make_cert(tmp_path / "a", "swap.example.com")
    second, second_key = make_cert(tmp_path / "b", "swap.example.com")
    site = proxy_site(
        backend, ["swap.example.com"], tls={"cert": str(first), "key": str(first_key)}
    )
    config = tls_config(tmp_path, [site])
    gw = start(gateway, config)
    port = https_port(config)

    def fingerprint() -> bytes:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:  # noqa: SIM117
            with context.wrap_socket(raw, server_hostname="swap.example.com") as tls:
                der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der

    before = fingerprint()
    assert before == x509.load_pem_x509_certificate(first.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    # a keep-alive connection opened before the reload
    held = client_context(first)
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    tls = held.wrap_socket(raw, server_hostname="swap.example.com")
    site["tls"] = {"cert": str(second), "key": str(second_key)}
    gw.reload(config, wait_for="configuration reloaded")
    after = fingerprint()
    assert after == x509.load_pem_x509_certificate(second.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    tls.sendall(b"GET /held HTTP/1.1\r\nHost: swap.example.com\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := tls.recv(65536):
        data += chunk
    tls.close()
    assert data.startswith(b"HTTP/1.1 200 ")
    assert "stopped listening" not in gw.stderr


def test_root_ca_created_once_and_reused(
    tmp_path: Path, backend: Backend, gateway: GatewayFactory
) -> None:
    config = tls_config(tmp_path, [proxy_site(backend, ["localhost"])])
    gw = start(gateway, config)
    root = root_path(tmp_path)
    first = root.read_bytes()
    leaf_before = peer_names(https_port(config), "localhost", client_context(root))
    gw.stop()
    gw.start()
    wait_for_port(https_port(config))
    assert root.read_bytes() == first
    assert peer_names(https_port(config), "localhost", client_context(root)) == leaf_before
    data = tmp_path / "data"
    keys = [*data.glob("ca/*.key"), *data.glob("certs/local/*.key")]
    assert len(keys) == 2
    for key in keys:
        assert key.stat().st_mode & 0o777 == 0o600


def check(config: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    import yaml

    path = tmp_path / "check.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "bastion", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_check_lists_https_and_tls_modes(tmp_path: Path, backend: Backend) -> None:
    cert, key = make_cert(tmp_path / "files", "files.example.com")
    sites = [
        proxy_site(backend, ["localhost"], hsts=True),
        proxy_site(backend, ["files.example.com"], tls={"cert": str(cert), "key": str(key)}),
        proxy_site(backend, ["plain.test"], tls="off"),
    ]
    config = tls_config(tmp_path, sites)
    result = check(config, tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"https://127.0.0.1:{https_port(config)}" in out
    assert "tls: internal (local CA), HSTS" in out
    assert f"tls: files (cert {cert})" in out
    assert "tls: off" in out
    assert "PRIVATE KEY" not in out and str(key) not in out


def test_config_errors(tmp_path: Path, backend: Backend) -> None:
    missing = proxy_site(
        backend, ["a.test"], tls={"cert": str(tmp_path / "nope.crt"), "key": str(tmp_path / "k")}
    )
    result = check(tls_config(tmp_path, [missing]), tmp_path)
    assert result.returncode == 1
    assert "sites[0].tls.cert: file" in result.stderr and "nope.crt does not exist" in result.stderr
    wildcard = proxy_site(backend, ["*.example.com"], tls="auto")
    result = check(tls_config(tmp_path, [wildcard]), tmp_path)
    assert result.returncode == 1
    assert "sites[0].tls:" in result.stderr
    assert "need the ACME DNS-01 challenge" in result.stderr
    public = proxy_site(backend, ["api.example.com"], tls="auto")
    result = check(tls_config(tmp_path, [public]), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "auto: ACME from https://acme-v02.api.letsencrypt.org/directory" in result.stdout
    bad = tls_config(tmp_path, [public], acme={"directory": "ftp://x", "email": "nope"})
    result = check(bad, tmp_path)
    assert result.returncode == 1
    assert "acme.directory" in result.stderr and "acme.email" in result.stderr


def test_trust_prints_root_and_instructions(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bastion", "trust", "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    root = tmp_path / "d" / "ca" / "root.crt"
    assert str(root) in result.stdout
    assert "update-ca-certificates" in result.stdout
    assert "security add-trusted-cert" in result.stdout
    assert f"--cacert {root}" in result.stdout
    assert (tmp_path / "d" / "ca" / "root.key").stat().st_mode & 0o777 == 0o600


def test_an_answer_before_the_body_says_the_connection_closes(
    tmp_path: Path, backend: Backend, gateway: GatewayFactory
) -> None:
    """A redirect (or a refusal) answered while the request's body is still on its way:
    the gateway closes the connection after it, so the answer carries Connection: close,
    and a client does not send its next request into a closing connection."""
    config = tls_config(tmp_path, [proxy_site(backend, ["localhost"])])
    gw = start(gateway, config)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(
            b"POST /form HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\npart"
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 308") and b"\r\nconnection: close" in head, answer
