"""The file CertStore: round trips, the issuance and account locks between two holders,
and the on-disk layout that data dirs written by earlier versions have."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bastion.state.certs import CertStore, FileCertStore, usable
from bastion.state.files import file_lock

DIRECTORY = "https://127.0.0.1:14000/dir"
HOST_DIR = "127.0.0.1_14000"  # the directory's host, as a file name
NAMES = ["Bastion.test", "www.bastion.test"]
NOW = dt.datetime.now(dt.UTC)


def pair(
    names: list[str], days: float = 90, start: dt.datetime = NOW
) -> tuple[bytes, bytes, x509.Certificate]:
    """A self-signed chain and its key for ``names``, valid ``days`` from ``start``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - dt.timedelta(minutes=1))
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem, cert


def test_account_round_trip(tmp_path: Path) -> None:
    store: CertStore = FileCertStore(tmp_path, DIRECTORY)
    assert store.read_account_key() is None
    assert store.read_account_url() is None
    with store.account_lock():
        store.write_account_key(b"-----BEGIN PRIVATE KEY-----\n...")
        store.write_account_url("https://127.0.0.1:14000/my-account/1")
    again = FileCertStore(tmp_path, DIRECTORY)
    assert again.read_account_key() == b"-----BEGIN PRIVATE KEY-----\n..."
    assert again.read_account_url() == "https://127.0.0.1:14000/my-account/1"
    # another directory on the same host shares the key file but not the account URL
    other = FileCertStore(tmp_path, "https://127.0.0.1:14000/other-dir")
    assert other.read_account_url() is None


def test_certificate_round_trip(tmp_path: Path) -> None:
    store: CertStore = FileCertStore(tmp_path, DIRECTORY)
    assert store.read(NAMES) is None
    assert usable(store, NAMES) is None
    chain, key, cert = pair(NAMES)
    store.save(NAMES, chain, key)
    assert store.read(NAMES) == (chain, key)
    found = usable(FileCertStore(tmp_path, DIRECTORY), NAMES)
    assert found is not None
    assert found.serial == cert.serial_number
    assert (found.cert, found.key) == store.files(NAMES)
    assert found.load() == cert
    assert found.not_after == cert.not_valid_after_utc
    # a subset of the names is the same set's entry; more names are not covered
    assert usable(store, ["bastion.test"]) is not None
    assert usable(store, [*NAMES, "api.bastion.test"]) is None

    store.update_status(NAMES, next_renewal="2030-01-01T00:00:00+00:00")
    store.update_status(NAMES, last_error="boom")
    assert store.read_status(NAMES) == {
        "next_renewal": "2030-01-01T00:00:00+00:00",
        "last_error": "boom",
    }
    assert store.revoked(NAMES) is None
    store.revoke(NAMES, cert.serial_number)
    assert store.read(NAMES) is None
    assert store.read_status(NAMES) == {}
    assert store.revoked(NAMES) == cert.serial_number  # until the next pair is saved
    store.save(NAMES, chain, key)
    assert store.revoked(NAMES) is None and store.read(NAMES) == (chain, key)


def test_usable_rejects_expired_mismatched_and_uncovering_pairs(tmp_path: Path) -> None:
    store = FileCertStore(tmp_path, DIRECTORY)
    chain, key, _ = pair(NAMES, days=1)
    store.save(NAMES, chain, key)
    assert usable(store, NAMES, NOW + dt.timedelta(days=2)) is None  # expired by then
    other_chain, _, _ = pair(NAMES)
    store.save(NAMES, other_chain, key)  # a crash between the key's and the chain's write
    assert usable(store, NAMES) is None
    narrow_chain, narrow_key, _ = pair(["bastion.test"])
    store.save(NAMES, narrow_chain, narrow_key)
    assert usable(store, NAMES) is None


def _excludes(first: AbstractContextManager[None], second: AbstractContextManager[None]) -> None:
    """While ``first`` is held, ``second`` (taken in another thread) waits for it."""
    acquired = threading.Event()
    release = threading.Event()

    def other() -> None:
        with second:
            acquired.set()
            release.wait(5)

    with first:
        thread = threading.Thread(target=other)
        thread.start()
        assert not acquired.wait(0.3), "the second holder got the lock while the first held it"
    assert acquired.wait(5), "the second holder never got the lock after the first let go"
    release.set()
    thread.join(5)


LockOf = Callable[[FileCertStore], AbstractContextManager[None]]


@pytest.mark.parametrize(
    "lock",
    [lambda s: s.issuance_lock(NAMES), lambda s: s.account_lock()],
    ids=["issuance", "account"],
)
def test_lock_excludes_a_second_holder(tmp_path: Path, lock: LockOf) -> None:
    # two stores on one data dir: two workers of one machine
    _excludes(lock(FileCertStore(tmp_path, DIRECTORY)), lock(FileCertStore(tmp_path, DIRECTORY)))


def test_issuance_locks_of_two_name_sets_are_independent(tmp_path: Path) -> None:
    store = FileCertStore(tmp_path, DIRECTORY)
    done = threading.Event()

    def other() -> None:
        with store.issuance_lock(["api.bastion.test"]):
            done.set()

    with store.issuance_lock(NAMES):
        thread = threading.Thread(target=other)
        thread.start()
        assert done.wait(5)
    thread.join(5)


def test_reads_a_data_dir_in_the_existing_layout(tmp_path: Path) -> None:
    """Files placed where earlier versions wrote them (and their lock files) are what the
    store reads and locks: existing data dirs keep working, old and new workers exclude
    each other during an upgrade."""
    account = tmp_path / "acme" / HOST_DIR
    account.mkdir(parents=True)
    (account / "account.key").write_bytes(b"KEY")
    record = {"directory": DIRECTORY, "url": "https://ca/acct/7"}
    (account / "account.json").write_text(json.dumps(record))
    site = tmp_path / "certs" / "acme" / HOST_DIR / "bastion.test"
    site.mkdir(parents=True)
    chain, key, cert = pair(NAMES)
    (site / "cert.pem").write_bytes(chain)
    (site / "key.pem").write_bytes(key)
    (site / "status.json").write_text(json.dumps({"last_error": "earlier"}))

    store = FileCertStore(tmp_path, DIRECTORY)
    assert store.read_account_key() == b"KEY"
    assert store.read_account_url() == "https://ca/acct/7"
    found = usable(store, NAMES)
    assert found is not None and found.serial == cert.serial_number
    assert (found.cert, found.key) == (site / "cert.pem", site / "key.pem")
    assert store.read_status(NAMES) == {"last_error": "earlier"}
    _excludes(file_lock(site / ".lock"), store.issuance_lock(NAMES))
    _excludes(file_lock(account / ".lock"), store.account_lock())


def test_writes_the_existing_layout(tmp_path: Path) -> None:
    store = FileCertStore(tmp_path, DIRECTORY)
    store.write_account_key(b"KEY")
    store.write_account_url("https://ca/acct/8")
    chain, key, _ = pair(["*.Example.test"])
    store.save(["*.Example.test"], chain, key)
    store.update_status(["*.Example.test"], last_error=None)
    account = tmp_path / "acme" / HOST_DIR
    assert (account / "account.key").read_bytes() == b"KEY"
    assert (account / "account.key").stat().st_mode & 0o777 == 0o600
    assert json.loads((account / "account.json").read_text()) == {
        "directory": DIRECTORY,
        "url": "https://ca/acct/8",
    }
    site = tmp_path / "certs" / "acme" / HOST_DIR / "_.example.test"
    assert (site / "cert.pem").read_bytes() == chain
    assert (site / "key.pem").read_bytes() == key
    assert (site / "key.pem").stat().st_mode & 0o777 == 0o600
    assert json.loads((site / "status.json").read_text()) == {"last_error": None}
