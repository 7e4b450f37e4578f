"""Renewal without restart against a real Pebble issuing 30-second certificates: a client
keeps requesting over HTTPS while the certificate is renewed (zero failed requests, the
served serial changes), through HTTP-01 and through TLS-ALPN-01 on the https listener;
a CA that goes away is reported loudly while the current certificate is still served; and
``bastion certs list|renew|revoke``."""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509

from conftest import Backend, Gateway, free_port
from pebble_support import (  # noqa: F401 (pebble_fixture is a fixture)
    NAMES,
    Pebble,
    acme_config,
    pebble_fixture,
    save_root,
    served_serial,
    wait_for_log,
)

SERVING = "acme: serving the certificate for bastion.test, www.bastion.test"
RENEWED = "acme: serving the renewed certificate for bastion.test, www.bastion.test"


def get_with_serial(port: int, name: str, root: Path) -> tuple[int, bytes]:
    """A new connection (new handshake): the served serial and the response."""
    context = ssl.create_default_context(cafile=str(root))
    request = f"GET /r HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:  # noqa: SIM117
        with context.wrap_socket(raw, server_hostname=name) as tls:
            der = tls.getpeercert(binary_form=True)
            tls.sendall(request)
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number, data


def start(
    tmp_path: Path,
    backend: Backend,
    pebble: Callable[..., Pebble],
    gateway: Callable[..., Gateway],
    challenge: str,
    validity: int,
    workers: int = 1,
) -> tuple[Pebble, Gateway, int]:
    http, https = free_port(), free_port()
    alpn = challenge == "tls-alpn-01"
    ca = pebble(http, tls_port=https if alpn else None, validity=validity)
    config = acme_config(tmp_path, backend, ca, http, https)
    if alpn:
        config["listen"] = {"http": [], "https": f"127.0.0.1:{https}"}
    config["tls"] = {"watch_interval": "1s"}
    config["workers"] = workers
    gw = gateway(config, port=https)
    # every worker logs it once it serves the certificate (the second one takes it up from
    # the store after the first one's order); until then that worker refuses the handshake
    wait_for_log(gw, SERVING, count=workers)
    return ca, gw, https


@pytest.mark.parametrize("challenge", ["http-01", "tls-alpn-01"])
def test_renewal_without_restart_while_serving(
    tmp_path: Path,
    backend: Backend,
    pebble: Callable[..., Pebble],
    gateway: Callable[..., Gateway],
    challenge: str,
) -> None:
    ca, gw, https = start(tmp_path, backend, pebble, gateway, challenge, validity=40)
    root = save_root(ca, tmp_path)
    first = served_serial(https, "bastion.test", root)
    # an established keep-alive connection keeps its certificate across the renewal
    context = ssl.create_default_context(cafile=str(root))
    kept = http.client.HTTPSConnection("bastion.test", https, context=context, timeout=10)
    kept.sock = context.wrap_socket(
        socket.create_connection(("127.0.0.1", https), timeout=10), server_hostname="bastion.test"
    )
    kept_sock = kept.sock
    serials: set[int] = set()
    failures: list[str] = []
    requests = 0
    after_renewal = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and after_renewal < 20:
        name = NAMES[requests % 2]
        requests += 1
        try:
            serial, response = get_with_serial(https, name, root)
        except (OSError, ssl.SSLError) as exc:
            failures.append(repr(exc))
            continue
        if not response.startswith(b"HTTP/1.1 200"):
            failures.append(response[:100].decode(errors="replace"))
        serials.add(serial)
        if RENEWED in gw.stderr:
            after_renewal += 1
        if requests % 10 == 0:
            kept.request("GET", "/kept")
            assert kept.getresponse().read() is not None
        time.sleep(0.05)
    assert failures == [], failures
    assert RENEWED in gw.stderr, gw.stderr
    assert len(serials) >= 2 and first in serials, serials
    assert served_serial(https, "www.bastion.test", root) != first
    kept.request("GET", "/kept")
    assert kept.getresponse().status == 200
    assert kept.sock is kept_sock  # the same connection all along
    kept_der = kept_sock.getpeercert(binary_form=True)
    assert kept_der is not None
    assert x509.load_der_x509_certificate(kept_der).serial_number == first
    kept.close()
    assert gw.proc is not None and gw.proc.poll() is None
    assert requests > 100
    if challenge == "tls-alpn-01":
        assert "tls-alpn-01 validation connection for bastion.test" in gw.stderr


def test_two_workers_renew_once(
    tmp_path: Path,
    backend: Backend,
    pebble: Callable[..., Pebble],
    gateway: Callable[..., Gateway],
) -> None:
    ca, gw, https = start(tmp_path, backend, pebble, gateway, "http-01", validity=30, workers=2)
    root = save_root(ca, tmp_path)
    first = served_serial(https, "bastion.test", root)
    # both workers schedule the renewal; the store's lock lets one order, the other picks
    # the new certificate up from the store
    wait_for_log(gw, RENEWED, timeout=60, count=2)
    time.sleep(1)
    assert gw.stderr.count("acme: ordering a certificate for") == 2, gw.stderr  # first + renewal
    serials = {served_serial(https, NAMES[i % 2], root) for i in range(40)}
    assert first not in serials and len(serials) == 1, serials  # every worker serves the new one


def test_failing_renewal_is_loud_and_keeps_serving(
    tmp_path: Path,
    backend: Backend,
    pebble: Callable[..., Pebble],
    gateway: Callable[..., Gateway],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BASTION_ACME_RETRY", "1")
    ca, gw, https = start(tmp_path, backend, pebble, gateway, "http-01", validity=30)
    root = save_root(ca, tmp_path)
    ca.stop()
    wait_for_log(gw, "acme: renewing the certificate for bastion.test, www.bastion.test failed")
    log = gw.stderr
    assert "The current certificate is still served; it expires in" in log, log
    assert "WARNING" in log or "ERROR" in log
    # back-off: the retry delay grows
    wait_for_log(gw, "Retrying in 2s", timeout=20)
    _, response = get_with_serial(https, "bastion.test", root)
    assert response.startswith(b"HTTP/1.1 200")
    rows = certs(gw, "list")
    assert "bastion.test,www.bastion.test" in rows.stdout and "cannot reach" in rows.stdout


def certs(gw: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion", "certs", *args, "-c", str(gw.config_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_certs_list_renew_revoke(
    tmp_path: Path,
    backend: Backend,
    pebble: Callable[..., Pebble],
    gateway: Callable[..., Gateway],
) -> None:
    ca, gw, https = start(tmp_path, backend, pebble, gateway, "http-01", validity=3600)
    root = save_root(ca, tmp_path)
    first = served_serial(https, "bastion.test", root)

    listed = certs(gw, "list")
    assert listed.returncode == 0, listed.stderr
    line = next(x for x in listed.stdout.splitlines() if x.startswith("bastion.test"))
    assert "acme" in line and "Pebble Intermediate" in line, listed.stdout
    assert "NEXT RENEWAL" in listed.stdout and "DAYS LEFT" in listed.stdout

    renewed = certs(gw, "renew", "www.bastion.test")
    assert renewed.returncode == 0, renewed.stderr
    assert "renewed bastion.test, www.bastion.test" in renewed.stdout
    # the running gateway picks the new certificate up from the store
    wait_for_log(gw, "changed; new handshakes for bastion.test, www.bastion.test use it", 20)
    second = served_serial(https, "bastion.test", root)
    assert second != first
    assert f"{second:x}" in renewed.stdout

    unknown = certs(gw, "revoke", "nope.test")
    assert unknown.returncode == 2 and "no ACME site matches" in unknown.stderr
    revoked = certs(gw, "revoke", "bastion.test")
    assert revoked.returncode == 0, revoked.stderr
    assert f"revoked bastion.test, www.bastion.test (serial {second:x})" in revoked.stdout
    assert "/revoke-cert" in ca.log.read_text()
    # the running gateway does not go on serving a revoked certificate until its renewal:
    # it obtains another within tls.watch_interval
    wait_for_log(gw, f"for bastion.test, www.bastion.test (serial {second:x}) was revoked", 20)
    deadline = time.monotonic() + 30
    while (third := served_serial(https, "bastion.test", root)) == second:
        assert time.monotonic() < deadline, gw.stderr
        time.sleep(0.2)
    assert third != first
    again = certs(gw, "list")
    assert "no valid certificate in the store yet" not in again.stdout, again.stdout
    assert "Traceback" not in gw.stderr
