"""Pure parts of the ACME support: the RFC 9773 certificate id, the ClientHello peek that
routes TLS-ALPN-01 validations, the challenge certificate, and the ACME config errors."""

from __future__ import annotations

import datetime as dt
import hashlib
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bastion.acme.jws import ari_cert_id
from bastion.acme.solvers import ACME_IDENTIFIER_OID, TlsAlpn01Solver, dns_txt_value
from bastion.config import ConfigError, load_config
from bastion.tls.alpn import parse_client_hello


def test_ari_cert_id_matches_the_rfc_example() -> None:
    # RFC 9773 section 4.1: AKI 69:88:5B:..., serial 00:87:65:43:21
    aki = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.com")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0x87654321)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.AuthorityKeyIdentifier(aki, None, None), critical=False)
        .sign(key, hashes.SHA256())
    )
    assert ari_cert_id(cert) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


def client_hello(server_name: str | None, alpn: list[str] | None) -> bytes:
    """The bytes a real client (Python's ssl) sends first."""
    context = ssl.create_default_context()
    if alpn:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_client_hello_name_and_alpn() -> None:
    hello = client_hello("bastion.test", ["acme-tls/1"])
    assert parse_client_hello(hello) == ("bastion.test", [b"acme-tls/1"])
    assert parse_client_hello(client_hello("a.test", ["h2", "http/1.1"])) == (
        "a.test",
        [b"h2", b"http/1.1"],
    )
    # an incomplete record asks for more bytes; garbage is "not a challenge"
    assert parse_client_hello(hello[:40]) is None
    assert parse_client_hello(b"GET / HTTP/1.1\r\n\r\n") == (None, [])
    assert parse_client_hello(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00") == (None, [])


def test_tls_alpn01_certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bastion.acme.solvers.time.sleep", lambda _: None)
    solver = TlsAlpn01Solver(tmp_path)
    solver.present("bastion.test", "tok", "tok.thumb")
    pem = (tmp_path / "acme" / "alpn" / "bastion.test.pem").read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    ext = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
    assert ext.critical
    assert ext.value.value == b"\x04\x20" + hashlib.sha256(b"tok.thumb").digest()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["bastion.test"]
    solver.cleanup("bastion.test", "tok", "tok.thumb")
    assert not (tmp_path / "acme" / "alpn" / "bastion.test.pem").exists()


def test_dns_txt_value() -> None:
    # RFC 8555 8.4: base64url(SHA-256(key authorization)), no padding
    assert dns_txt_value("abc") == "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"


def load(tmp_path: Path, text: str) -> ConfigError | None:
    path = tmp_path / "bastion.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as exc:
        return exc
    return None


SITE = """sites:
  - hosts: [example.com, "*.example.com"]
    routes: [{path: /, respond: {status: 200}}]
"""


def test_wildcards_need_a_dns_hook(tmp_path: Path) -> None:
    head = "listen: {http: 127.0.0.1:8080, https: 127.0.0.1:8443}\n"
    error = load(tmp_path, head + SITE)
    assert error is not None and "acme.dns_hook" in str(error)
    hook = "acme: {dns_hook: {command: /usr/local/bin/hook}}\n"
    assert load(tmp_path, head + hook + SITE) is None


def test_acme_config_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EAB_SECRET", "not base64 at all!")
    text = """listen: {http: [], https: 127.0.0.1:8443}
acme:
  challenges: [dns-01, smoke-signals]
  key_type: rsa1024
  eab: {key_id: kid-1, hmac_key: "${EAB_SECRET}"}
sites:
  - hosts: [example.com]
    routes: [{path: /, respond: {status: 200}}]
"""
    error = load(tmp_path, text)
    assert error is not None
    report = str(error)
    assert "not base64 at all!" not in report
    assert "acme.eab.hmac_key" in report and "base64url" in report
    assert "acme.challenges[1]" in report and "acme.key_type" in report
    no_listener = load(tmp_path, "listen: {http: []}\n" + SITE.replace('"*.example.com"', ""))
    assert no_listener is not None and "no listener" in str(no_listener)
