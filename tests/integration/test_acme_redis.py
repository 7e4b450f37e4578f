"""Certificates shared through a real Redis by three `bastion run` processes (separate data
dirs, one Redis, one name) against a real Pebble: one order, every instance serves it; the
CA's HTTP-01 request answered by an instance that did not order; renewal by exactly one;
Redis lost after issuance; a wrong encryption key; a lock whose owner died."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Backend, Gateway, free_port
from pebble_support import (  # noqa: F401 (pebble_fixture is a fixture)
    Pebble,
    acme_config,
    pebble_fixture,
    save_root,
    served_serial,
    wait_for_log,
)
from rediskit import RedisServer, redis_cluster, redis_server  # noqa: F401 (fixtures)

SERVING = "acme: serving the certificate for bastion.test, www.bastion.test"
RENEWED = "acme: serving the renewed certificate for bastion.test, www.bastion.test"
ORDERING = "acme: ordering a certificate for bastion.test"
ANSWERED = "acme: answered the http-01 challenge"
KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # 32 bytes, base64
OTHER_KEY = "ff" * 32


class ToAnotherInstance:
    """Pebble's HTTP-01 port: each validation connection is forwarded to an instance that
    has not logged an order (so the answer comes from Redis, not from the orderer)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.instances: list[tuple[Gateway, int]] = []  # (gateway, its http port)
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._forward, args=(conn,), daemon=True).start()

    def _forward(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + 10
        while True:  # an instance listening that did not order (one may still be starting)
            others = [
                port
                for gw, port in self.instances
                if ORDERING not in (log := gw.stderr) and f"127.0.0.1:{port}" in log
            ]
            if others or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        try:
            upstream = socket.create_connection(("127.0.0.1", others[0]), timeout=10)
        except (OSError, IndexError):
            conn.close()
            return
        for a, b in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self.listener.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    for s in (src, dst):
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def forwarder() -> Iterator[ToAnotherInstance]:
    made = ToAnotherInstance()
    yield made
    made.close()


def instance_config(
    tmp_path: Path,
    n: int,
    backend: Backend,
    ca: Pebble,
    redis: RedisServer,
    key: str | None = KEY,
    alpn: bool = False,
) -> tuple[dict[str, Any], int, int]:
    http, https = free_port(), free_port()
    config = acme_config(tmp_path / f"i{n}", backend, ca, http, https)
    if alpn:  # no http listener: TLS-ALPN-01 on the https one
        config["listen"] = {"http": [], "https": f"127.0.0.1:{https}"}
    config["tls"] = {"watch_interval": "1s"}
    config["state"] = {"redis": redis.url, "key_prefix": "t:"}
    if key is not None:
        config["state"]["encryption_key"] = key
    return config, http, https


def start_three(
    tmp_path: Path,
    backend: Backend,
    ca: Pebble,
    redis: RedisServer,
    gateway: Callable[..., Gateway],
    forwarder: ToAnotherInstance | None = None,
    alpn: bool = False,
    workers: int = 1,
) -> list[tuple[Gateway, int]]:
    """Three instances started together (the first with ``workers``); returns (gateway,
    https port) once each serves.
    The forwarder (Pebble's validation port) leads to their http ports, or to their https
    ports with ``alpn``."""
    made = []
    for n in range(3):
        config, http, https = instance_config(tmp_path, n, backend, ca, redis, alpn=alpn)
        config["workers"] = workers if n == 0 else 1
        gw = gateway(config, port=https, start=False)
        made.append((gw, https))
        if forwarder is not None:
            forwarder.instances.append((gw, https if alpn else http))
    for gw, _ in made:
        gw.start(wait=False)
    for n, (gw, _) in enumerate(made):
        wait_for_log(gw, SERVING, count=workers if n == 0 else 1)
    return made


def test_one_order_for_three_instances_answered_by_another_and_kept_without_redis(
    tmp_path: Path,
    backend: Backend,
    pebble: Callable[..., Pebble],
    gateway: Callable[..., Gateway],
    redis_server: Callable[[], RedisServer],  # noqa: F811
    forwarder: ToAnotherInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BASTION_ACME_RETRY", "1")
    redis = redis_server()
    ca = pebble(forwarder.port, nonce_reject=0)  # (no badNonce retries: one order, one request)
    instances = start_three(tmp_path, backend, ca, redis, gateway, forwarder)
    root = save_root(ca, tmp_path)

    assert ca.new_orders() == 1
    serials = {served_serial(https, "bastion.test", root) for _, https in instances}
    assert len(serials) == 1, serials
    orderers = [gw for gw, _ in instances if ORDERING in gw.stderr]
    answerers = [gw for gw, _ in instances if ANSWERED in gw.stderr]
    assert len(orderers) == 1
    assert answerers and orderers[0] not in answerers
    # the keys in Redis are sealed: no private key in clear
    dump = subprocess.run(
        ["redis-cli", "-p", str(redis.port), "--no-raw", "HGET", redis.all_keys("t:{cert:*")[0],
         "key"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert b"PRIVATE KEY" not in dump and b"bastion-aesgcm-1:" in dump

    # `bastion certs renew` orders into Redis; every instance takes it up within
    # tls.watch_interval (its serial in Redis changed), not at its own renewal time
    renew = subprocess.run(
        [sys.executable, "-m", "bastion", "certs", "renew", "-c", str(instances[0][0].config_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert renew.returncode == 0 and "renewed bastion.test" in renew.stdout, renew
    assert ca.new_orders() == 2
    before = serials.pop()
    deadline = time.monotonic() + 10
    while True:
        serials = {served_serial(https, "bastion.test", root) for _, https in instances}
        if len(serials) == 1 and before not in serials:
            break
        assert time.monotonic() < deadline, serials
        time.sleep(0.2)

    # a fourth instance with another encryption key: an error that says so, and no order
    config, _, https = instance_config(tmp_path, 3, backend, ca, redis, key=OTHER_KEY)
    wrong = gateway(config, port=https)
    wait_for_log(wrong, "does not decrypt with state.encryption_key")
    assert "give every instance the same state.encryption_key" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    wrong.stop()
    assert ca.new_orders() == 2
    listed = subprocess.run(
        [sys.executable, "-m", "bastion", "certs", "list", "-c", str(wrong.config_path)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert "does not decrypt with state.encryption_key" in listed.stdout, listed
    assert "Traceback" not in listed.stderr

    # Redis goes away: every instance keeps serving its local copy, even after a restart
    redis.stop()
    serial = serials.pop()
    for _, https in instances:
        assert served_serial(https, "www.bastion.test", root) == serial
    first, https = instances[0]
    first.stop()
    first.start()
    assert served_serial(https, "bastion.test", root) == serial
    wait_for_log(first, "unreachable")
    assert ca.new_orders() == 2


def test_renewal_by_exactly_one_instance(
    tmp_path: Path,
    backend: Backend,
    pebble: Callable[..., Pebble],
    gateway: Callable[..., Gateway],
    redis_server: Callable[[], RedisServer],  # noqa: F811
    forwarder: ToAnotherInstance,
) -> None:
    redis = redis_server()
    ca = pebble(forwarder.port, validity=30, nonce_reject=0)
    # the first instance runs two workers: four processes, still one order
    instances = start_three(tmp_path, backend, ca, redis, gateway, forwarder, workers=2)
    root = save_root(ca, tmp_path)
    assert ca.new_orders() == 1
    first = {served_serial(https, "bastion.test", root) for _, https in instances}
    assert len(first) == 1
    deadline = time.monotonic() + 40
    while True:
        now = {served_serial(https, "bastion.test", root) for _, https in instances}
        if len(now) == 1 and now != first:
            break
        assert time.monotonic() < deadline, (now, [gw.stderr for gw, _ in instances])
        time.sleep(0.2)
    assert ca.new_orders() == 2
    assert sum(gw.stderr.count(ORDERING) for gw, _ in instances) == 2
    assert [gw.stderr.count(RENEWED) >= 1 for gw, _ in instances] == [True] * 3
    wait_for_log(instances[0][0], RENEWED, count=2)  # both of its workers


def test_tls_alpn_01_answered_by_another_instance(
    tmp_path: Path,
    backend: Backend,
    pebble: Callable[..., Pebble],
    gateway: Callable[..., Gateway],
    redis_server: Callable[[], RedisServer],  # noqa: F811
    forwarder: ToAnotherInstance,
) -> None:
    redis = redis_server()
    # Pebble's TLS-ALPN-01 connections reach an instance that did not order
    ca = pebble(free_port(), tls_port=forwarder.port, nonce_reject=0)
    instances = start_three(tmp_path, backend, ca, redis, gateway, forwarder, alpn=True)
    root = save_root(ca, tmp_path)
    assert ca.new_orders() == 1
    assert len({served_serial(https, "bastion.test", root) for _, https in instances}) == 1
    assert sum(ORDERING in gw.stderr for gw, _ in instances) == 1
    # the challenge certificates were mirrored by the others and are gone again
    assert redis.keys("t:acme-alpn") == 0


HOLD = """
import sys, time
from bastion.config.state_models import State
from bastion.state.redis_lock import RedisLock
from bastion.state.redis_sync import connect_sync
lock = RedisLock(connect_sync(State(redis=sys.argv[1])), "t:{cert:x}:lock", ttl=1.0)
lock.acquire()
print("held", flush=True)
time.sleep(3600)
"""


def test_a_lock_whose_owner_died_expires_and_another_takes_it(
    redis_server: Callable[[], RedisServer],  # noqa: F811
) -> None:
    from bastion.config.state_models import State
    from bastion.state.redis_lock import LockTimeout, RedisLock
    from bastion.state.redis_sync import connect_sync

    redis = redis_server()
    owner = subprocess.Popen(
        [sys.executable, "-c", HOLD, redis.url], stdout=subprocess.PIPE, env=dict(os.environ)
    )
    try:
        assert owner.stdout is not None and owner.stdout.readline() == b"held\n"
        client = connect_sync(State(redis=redis.url))
        # alive, its owner extends it past its 1s ttl: still taken after 2.5s
        time.sleep(2.5)
        with pytest.raises(LockTimeout):
            RedisLock(client, "t:{cert:x}:lock", wait=0.5, poll=0.1).acquire()
        # someone else's release does not free it
        RedisLock(client, "t:{cert:x}:lock").release()
        assert redis.command("EXISTS", "t:{cert:x}:lock") == ":1"
        owner.kill()
        owner.wait()
        taker = RedisLock(client, "t:{cert:x}:lock", wait=10, poll=0.1)
        taker.acquire()
        assert redis.command("GET", "t:{cert:x}:lock").startswith("$")
        taker.release()
        assert redis.command("EXISTS", "t:{cert:x}:lock") == ":0"
    finally:
        owner.kill()
        owner.wait()


def self_signed(name: str) -> tuple[bytes, bytes, int]:
    """A chain (one certificate for ``name``, valid a day) and its key, PEM; its serial."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem, cert.serial_number


def test_certificates_locks_and_answers_on_a_redis_cluster(
    tmp_path: Path,
    redis_cluster: list[RedisServer],  # noqa: F811
) -> None:
    from bastion.config.state_models import State
    from bastion.state.redis_lock import LockTimeout
    from bastion.state.stores import Stores

    state = State.model_validate(
        {"redis": {"cluster": [f"127.0.0.1:{redis_cluster[0].port}"]}, "encryption_key": KEY}
    )
    directory = "https://ca.test/dir"
    one, two = (Stores(tmp_path / n).cert_store(state, directory) for n in ("a", "b"))
    chain, key, serial = self_signed("a.test")
    one.save(["a.test"], chain, key)
    # the other instance reads it (and keeps its own copy), with its serial
    assert two.serial(["a.test"]) == serial
    assert two.read(["a.test"]) == (chain, key)
    assert two.files(["a.test"])[1].read_bytes() == key
    with one.issuance_lock(["a.test"]), pytest.raises(LockTimeout):
        two.lock_wait = 0.3
        with two.issuance_lock(["a.test"]):
            pass
    with two.issuance_lock(["a.test"]):  # released by its owner: free again
        pass
    answers = Stores(tmp_path / "a").challenges(state), Stores(tmp_path / "b").challenges(state)
    answers[0].publish("tok-1", "tok-1.thumb")
    assert answers[1].lookup("tok-1") == b"tok-1.thumb"
    answers[0].unpublish("tok-1")
    assert answers[1].lookup("tok-1") is None
    # a revocation on one instance: the pair leaves Redis and both local copies (the other
    # instance's at its next read, even while it serves it), its serial is remembered
    # until the next pair is stored, and the copy is never pushed back
    one.revoke(["a.test"], serial)
    assert one.read(["a.test"]) is None and two.revoked(["a.test"]) == serial
    assert two.serial(["a.test"]) is None
    assert two.files(["a.test"])[0].exists()  # (not read since)
    assert two.read(["a.test"]) is None
    assert not two.files(["a.test"])[0].exists() and two.revoked(["a.test"]) == serial
    chain2, key2, _ = self_signed("a.test")
    two.save(["a.test"], chain2, key2)
    assert one.revoked(["a.test"]) is None and one.read(["a.test"]) == (chain2, key2)


def test_a_certificate_revoked_on_one_instance_is_replaced_on_every_one(
    tmp_path: Path,
    backend: Backend,
    pebble: Callable[..., Pebble],
    gateway: Callable[..., Gateway],
    redis_server: Callable[[], RedisServer],  # noqa: F811
    forwarder: ToAnotherInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BASTION_ACME_RETRY", "1")
    redis = redis_server()
    ca = pebble(forwarder.port, nonce_reject=0)
    instances = start_three(tmp_path, backend, ca, redis, gateway, forwarder)
    root = save_root(ca, tmp_path)
    (revoked,) = {served_serial(https, "bastion.test", root) for _, https in instances}
    assert ca.new_orders() == 1

    done = subprocess.run(
        [sys.executable, "-m", "bastion", "certs", "revoke", "bastion.test", "-c",
         str(instances[1][0].config_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done
    assert f"revoked bastion.test, www.bastion.test (serial {revoked:x})" in done.stdout
    # every instance, not only the one the command ran beside, stops serving it within
    # tls.watch_interval: one new order between them, the same new certificate on all
    deadline = time.monotonic() + 30
    while True:
        serials = {served_serial(https, "bastion.test", root) for _, https in instances}
        if len(serials) == 1 and revoked not in serials:
            break
        assert time.monotonic() < deadline, (serials, [gw.stderr for gw, _ in instances])
        time.sleep(0.2)
    assert ca.new_orders() == 2
    assert all("Traceback" not in gw.stderr for gw, _ in instances)
