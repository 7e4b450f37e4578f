"""The local CA on disk: root created once, leaves cached and re-issued near expiry."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from bastion.state.files import atomic_write, resolve_data_dir
from bastion.tls.localca import LEAF_LIFETIME, LocalCA


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


def test_root_created_once_and_reused(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path)
    fingerprint = ca.root_fingerprint()
    pem = ca.root_cert_path.read_bytes()
    again = LocalCA(tmp_path)  # a restart
    assert again.root_fingerprint() == fingerprint
    assert again.root_cert_path.read_bytes() == pem
    cert = x509.load_pem_x509_certificate(pem)
    assert cert.subject.rfc4514_string().startswith("CN=bastion local CA ")
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc - cert.not_valid_before_utc >= dt.timedelta(days=3650)
    assert ca.root_key_path.stat().st_mode & 0o777 == 0o600


def test_leaf_names_and_verification(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path)
    leaf = ca.leaf(["localhost", "127.0.0.1", "::1", "api.internal"])
    cert = x509.load_pem_x509_certificate(leaf.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "api.internal"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= LEAF_LIFETIME + dt.timedelta(
        minutes=10
    )
    assert leaf.key.stat().st_mode & 0o777 == 0o600
    # the chain and key load, and the leaf verifies against the root
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(leaf.cert, leaf.key)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.root_cert_path.read_bytes()))


def test_leaf_cached_then_reissued_in_last_third(tmp_path: Path) -> None:
    clock = Clock()
    ca = LocalCA(tmp_path, clock)
    first = ca.leaf(["localhost"])
    pem = first.cert.read_bytes()
    clock.now += LEAF_LIFETIME / 2  # still fresh
    assert LocalCA(tmp_path, clock).leaf(["localhost"]).cert.read_bytes() == pem
    clock.now += LEAF_LIFETIME / 4  # three quarters through: re-issue
    renewed = LocalCA(tmp_path, clock).leaf(["localhost"])
    assert renewed.cert == first.cert
    assert renewed.cert.read_bytes() != pem
    new = x509.load_pem_x509_certificate(renewed.cert.read_bytes())
    assert new.not_valid_before_utc > clock.now - dt.timedelta(hours=1)


def test_different_name_sets_get_different_files(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path)
    a = ca.leaf(["a.test"])
    b = ca.leaf(["a.test", "b.test"])
    assert a.cert != b.cert
    fp = x509.load_pem_x509_certificate(a.cert.read_bytes()).fingerprint(hashes.SHA256())
    assert fp != x509.load_pem_x509_certificate(b.cert.read_bytes()).fingerprint(hashes.SHA256())


def test_atomic_write_mode_and_no_leftovers(tmp_path: Path) -> None:
    target = tmp_path / "secret.key"
    atomic_write(target, b"one", 0o600)
    atomic_write(target, b"two", 0o600)
    assert target.read_bytes() == b"two"
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]


def test_data_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BASTION_DATA_DIR", raising=False)
    assert resolve_data_dir(str(tmp_path / "cfg")) == tmp_path / "cfg"
    monkeypatch.setenv("BASTION_DATA_DIR", str(tmp_path / "env"))  # what --data-dir sets
    assert resolve_data_dir(str(tmp_path / "cfg")) == tmp_path / "env"
    monkeypatch.delenv("BASTION_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    root = os.geteuid() == 0
    expected = Path("/var/lib/bastion") if root else tmp_path / "xdg" / "bastion"
    assert resolve_data_dir(None) == expected


def test_a_leaf_whose_key_is_not_its_own_is_reissued(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path)
    first = ca.leaf(["localhost"])
    other = ca.leaf(["other.internal"])
    pem = first.cert.read_bytes()
    first.key.write_bytes(other.key.read_bytes())  # a crash between the two writes
    again = LocalCA(tmp_path).leaf(["localhost"])
    assert again.cert.read_bytes() != pem
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(again.cert, again.key)


def test_a_leaf_of_a_replaced_root_is_reissued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = LocalCA(tmp_path / "here")
    pem = ca.leaf(["localhost"]).cert.read_bytes()
    # a root made on another machine (its name says so) replaces this one
    monkeypatch.setattr("bastion.tls.localca.socket.gethostname", lambda: "elsewhere")
    other = LocalCA(tmp_path / "there")
    other.root()
    for path in (other.root_cert_path, other.root_key_path):
        (ca.dir / path.name).write_bytes(path.read_bytes())
    again = LocalCA(tmp_path / "here").leaf(["localhost"])
    assert again.cert.read_bytes() != pem
    issued = x509.load_pem_x509_certificate(again.cert.read_bytes())
    assert "elsewhere" in issued.issuer.rfc4514_string()


def test_a_damaged_leaf_is_reissued(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path)
    leaf = ca.leaf(["localhost"])
    leaf.cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
    again = LocalCA(tmp_path).leaf(["localhost"])
    x509.load_pem_x509_certificate(again.cert.read_bytes())  # a real certificate again


def test_a_fresh_leaf_is_checked_without_cryptography(tmp_path: Path) -> None:
    LocalCA(tmp_path).leaf(["localhost"])
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from bastion.tls.localca import LocalCA\n"
        f"LocalCA(Path({str(tmp_path)!r})).leaf(['localhost'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cryptography'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"
