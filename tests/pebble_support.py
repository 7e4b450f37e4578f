"""A real Pebble ACME server for the tests (Debian's ``pebble``), and helpers around it.

``pebble-challtestsrv`` is Pebble's DNS server: it answers 127.0.0.1 for every A query and
serves the TXT records that DNS-01 hooks set through its management API. Under CI=true a
missing Pebble fails the tests instead of skipping them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import Backend, Gateway, free_port, wait_for_port

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
    challtestsrv: int  # pebble-challtestsrv's management port (set-txt, clear-txt)
    proc: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        """The CA goes away (renewals then fail)."""
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(10)

    def root(self) -> bytes:
        """Pebble's issuing root, from its management interface."""
        context = ssl.create_default_context(cafile=str(self.minica))
        url = f"https://127.0.0.1:{self.management}/roots/0"
        with urllib.request.urlopen(url, context=context, timeout=10) as resp:
            body: bytes = resp.read()
        return body

    def new_orders(self) -> int:
        text = self.log.read_text(errors="replace")
        return text.count("/order-plz")


def pebble_factory(tmp_path: Path) -> Iterator[Callable[..., Pebble]]:
    """`pebble(http_port, tls_port=None, validity=None, eab=None, nonce_reject=30)` → a
    running Pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`,
    issuing certificates valid `validity` seconds, requiring EAB with the `eab` keys."""
    _require_pebble()
    procs: list[subprocess.Popen[bytes]] = []

    def start(
        http_port: int,
        tls_port: int | None = None,
        validity: int | None = None,
        eab: dict[str, str] | None = None,
        nonce_reject: int = 30,
    ) -> Pebble:
        base = tmp_path / f"pebble{len(procs)}"
        base.mkdir()
        minica, cert, key = _minica(base)
        dns, challtest = free_port(), free_port()
        dns_log = (base / "challtestsrv.log").open("wb")
        procs.append(
            subprocess.Popen(
                [
                    CHALLTESTSRV,
                    "-dns01", f"127.0.0.1:{dns}",
                    "-http01", "",
                    "-https01", "",
                    "-tlsalpn01", "",
                    "-management", f"127.0.0.1:{challtest}",
                    "-defaultIPv4", "127.0.0.1",
                    "-defaultIPv6", "",
                ],
                stdout=dns_log,
                stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
        port, management = free_port(), free_port()
        settings: dict[str, Any] = {
            "listenAddress": f"127.0.0.1:{port}",
            "managementListenAddress": f"127.0.0.1:{management}",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": http_port,
            "tlsPort": tls_port or free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": eab is not None,
        }
        if eab is not None:
            settings["externalAccountMACKeys"] = eab
        if validity is not None:
            settings["certificateValidityPeriod"] = validity
        (base / "pebble.json").write_text(json.dumps({"pebble": settings}))
        env = dict(
            os.environ,
            PEBBLE_VA_NOSLEEP="1",
            PEBBLE_VA_ALWAYS_VALID="0",
            PEBBLE_WFE_NONCEREJECT=str(nonce_reject),  # rejected good nonces: badNonce retries
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
        wait_for_port(challtest)
        return Pebble(
            f"https://127.0.0.1:{port}/dir", management, minica, log_path, challtest, procs[-1]
        )

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


def save_root(pebble: Pebble, tmp_path: Path) -> Path:
    root = tmp_path / "pebble-root.pem"
    root.write_bytes(pebble.root())
    return root


def served_serial(port: int, name: str, root: Path) -> int:
    """The serial of the certificate served for `name` (verified against `root`)."""
    context = ssl.create_default_context(cafile=str(root))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:  # noqa: SIM117
        with context.wrap_socket(raw, server_hostname=name) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


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


@pytest.fixture(name="pebble")
def pebble_fixture(tmp_path: Path) -> Iterator[Callable[..., Pebble]]:
    """A factory of real Pebble ACME servers; import it into a test module to use it."""
    yield from pebble_factory(tmp_path)
