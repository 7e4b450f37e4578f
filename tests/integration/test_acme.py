"""ACME against a real Pebble (Debian's ``pebble``): HTTP-01 through bastion's http
listener, the certificate served over HTTPS and verified against Pebble's root, reuse of
the stored certificate and account on restart, and a challenge that cannot validate.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Backend, Gateway, free_port, wait_for_port
from pebble_support import (  # noqa: F401 (pebble_fixture is a fixture)
    NAMES,
    Pebble,
    acme_config,
    https_get,
    pebble_fixture,
    wait_for_log,
)


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
