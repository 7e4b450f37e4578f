"""ACME against a real Pebble (Debian's ``pebble``): HTTP-01 through bastion's http
listener, the certificate served over HTTPS and verified against Pebble's root, reuse of
the stored certificate and account on restart, and a challenge that cannot validate.

Pebble resolves names through ``pebble-challtestsrv``'s DNS, which answers 127.0.0.1 for
every A query. Under CI=true a missing Pebble fails these tests instead of skipping them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tests.conftest import Backend, Gateway, free_port, wait_for_port

PEBBLE = shutil.which("pebble") or "/usr/bin/pebble"
CHALLTESTSRV = shutil.which("pebble-challtestsrv") or "/usr/bin/pebble-challtestsrv"
NAMES = ["bastion.test", "www.bastion.test"]


def _require_pebble() -> None:
    if os.path.exists(PEBBLE) and os.path.exists(CHALLTESTSRV):
        return
    message = "pebble is not installed (apt-get install pebble)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _minica(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost (Pebble's TLS)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test minica")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = (directory / "minica.pem", directory / "pebble.crt", directory / "pebble.key")
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(cert.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@dataclass
class Pebble:
    directory: str
    management: int
    minica: Path
    log: Path

    def root(self) -> bytes:
        """Pebble's issuing root, from its management interface."""
        context = ssl.create_default_context(cafile=str(self.minica))
        import urllib.request

        url = f"https://127.0.0.1:{self.management}/roots/0"
        with urllib.request.urlopen(url, context=context, timeout=10) as resp:
            body: bytes = resp.read()
        return body

    def new_orders(self) -> int:
        text = self.log.read_text(errors="replace")
        return text.count("/order-plz")


@pytest.fixture
def pebble(tmp_path: Path) -> Iterator[Callable[[int], Pebble]]:
    """`pebble(http_port)` → a running Pebble validating HTTP-01 on that port."""
    _require_pebble()
    procs: list[subprocess.Popen[bytes]] = []

    def start(http_port: int) -> Pebble:
        base = tmp_path / f"pebble{len(procs)}"
        base.mkdir()
        minica, cert, key = _minica(base)
        dns = free_port()
        dns_log = (base / "challtestsrv.log").open("wb")
        procs.append(
            subprocess.Popen(
                [
                    CHALLTESTSRV,
                    "-dns01", f"127.0.0.1:{dns}",
                    "-http01", "",
                    "-https01", "",
                    "-tlsalpn01", "",
                    "-management", f"127.0.0.1:{free_port()}",
                    "-defaultIPv4", "127.0.0.1",
                    "-defaultIPv6", "",
                ],
                stdout=dns_log,
                stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
        port, management = free_port(), free_port()
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{port}",
                "managementListenAddress": f"127.0.0.1:{management}",
                "certificate": str(cert),
                "privateKey": str(key),
                "httpPort": http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        (base / "pebble.json").write_text(json.dumps(config))
        env = dict(
            os.environ,
            PEBBLE_VA_NOSLEEP="1",
            PEBBLE_VA_ALWAYS_VALID="0",
            PEBBLE_WFE_NONCEREJECT="30",  # a third of good nonces rejected: badNonce retries
            PEBBLE_AUTHZREUSE="0",
        )
        log_path = base / "pebble.log"
        procs.append(
            subprocess.Popen(
                [PEBBLE, "-config", str(base / "pebble.json"), "-dnsserver", f"127.0.0.1:{dns}"],
                stdout=log_path.open("wb"),
                stderr=subprocess.STDOUT,
                env=env,
            )
        )
        wait_for_port(port)
        wait_for_port(management)
        return Pebble(f"https://127.0.0.1:{port}/dir", management, minica, log_path)

    yield start
    for proc in reversed(procs):
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def acme_config(
    tmp_path: Path, backend: Backend, pebble: Pebble, http: int, https: int
) -> dict[str, Any]:
    return {
        "acme": {
            "email": "ops@example.test",
            "directory": pebble.directory,
            "trusted_roots": str(pebble.minica),
        },
        "listen": {"http": f"127.0.0.1:{http}", "https": f"127.0.0.1:{https}"},
        "data_dir": str(tmp_path / "data"),
        "access_log": {"format": "off"},
        "log_level": "info",
        "sites": [
            {
                "hosts": NAMES,
                "tls": "auto",
                "hsts": True,
                "routes": [{"path": "/", "proxy": {"upstreams": [backend.url]}}],
            }
        ],
    }


def wait_for_log(gw: Gateway, text: str, timeout: float = 60.0, count: int = 1) -> None:
    deadline = time.monotonic() + timeout
    while gw.stderr.count(text) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {text!r} in the log:\n{gw.stderr}")
        if gw.proc is not None and gw.proc.poll() is not None:
            raise AssertionError(f"bastion exited:\n{gw.stderr}")
        time.sleep(0.1)


def https_get(port: int, name: str, root: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(root))
    request = f"GET /hello HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:  # noqa: SIM117
        with context.wrap_socket(raw, server_hostname=name) as tls:
            tls.sendall(request.encode())
            chunks = []
            while chunk := tls.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


def test_http01_certificate_served_and_reused_after_restart(
    tmp_path: Path,
    backend: Backend,
    pebble: Callable[[int], Pebble],
    gateway: Callable[..., Gateway],
) -> None:
    http, https = free_port(), free_port()
    ca = pebble(http)
    config = acme_config(tmp_path, backend, ca, http, https)
    gw = gateway(config)
    wait_for_log(gw, "acme: serving the certificate for bastion.test, www.bastion.test")
    assert "badNonce" not in gw.stderr or "could not get" not in gw.stderr
    root = tmp_path / "pebble-root.pem"
    root.write_bytes(ca.root())
    for name in NAMES:
        response = https_get(https, name, root)
        assert response.startswith(b"HTTP/1.1 200"), response[:300]
        assert b"Strict-Transport-Security" in response
    assert backend.requests[-1]["path"] == "/hello"
    orders = ca.new_orders()
    assert orders >= 1, ca.log.read_text()
    assert gw.stderr.count("acme: ordering a certificate") == 1

    data = tmp_path / "data"
    account_key = next(data.glob("acme/*/account.key"))
    assert account_key.stat().st_mode & 0o777 == 0o600
    site_dir = next(data.glob("certs/acme/*/bastion.test"))
    assert (site_dir / "key.pem").stat().st_mode & 0o777 == 0o600
    key_before = account_key.read_bytes()

    # a restart serves the stored certificate at once and orders nothing
    gw.stop()
    gw.start()
    wait_for_port(https)
    response = https_get(https, "www.bastion.test", root)
    assert response.startswith(b"HTTP/1.1 200"), response[:300]
    time.sleep(0.5)
    assert "acme: ordering" not in gw.stderr, gw.stderr
    assert "registered" not in gw.stderr
    assert ca.new_orders() == orders
    assert account_key.read_bytes() == key_before


def test_challenge_that_cannot_validate_is_reported(
    tmp_path: Path,
    backend: Backend,
    pebble: Callable[[int], Pebble],
    gateway: Callable[..., Gateway],
) -> None:
    http, https = free_port(), free_port()
    ca = pebble(free_port())  # Pebble validates on a port where nothing listens
    gw = gateway(acme_config(tmp_path, backend, ca, http, https))
    wait_for_log(gw, "acme: could not get a certificate for bastion.test, www.bastion.test")
    log = gw.stderr
    assert "urn:ietf:params:acme:error:connection" in log, log
    assert "port 80" in log and "Retrying in" in log
    # meanwhile the names are refused cleanly, never served a wrong certificate
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # even a client that accepts anything gets nothing
    with socket.create_connection(("127.0.0.1", https), timeout=5) as raw:  # noqa: SIM117
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            context.wrap_socket(raw, server_hostname="bastion.test")
    # plain HTTP still redirects, and an unknown challenge token is not answered
    with socket.create_connection(("127.0.0.1", http), timeout=5) as raw:
        raw.sendall(
            b"GET /.well-known/acme-challenge/nope HTTP/1.1\r\nHost: bastion.test\r\n"
            b"Connection: close\r\n\r\n"
        )
        assert raw.recv(4096).startswith(b"HTTP/1.1 301")
