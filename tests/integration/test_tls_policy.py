"""TLS policy through real handshakes: the 'modern' profile (TLS 1.3 only), session
resumption, and certificate files reloaded when they change (a bad pair keeps the old one)."""

from __future__ import annotations

import os
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from test_tls import (
    client_context,
    https_port,
    make_cert,
    peer_names,
    proxy_site,
    root_path,
    start,
    tls_config,
)

from conftest import Backend, Gateway

GatewayFactory = Callable[..., Gateway]


def test_modern_profile_is_tls13_only(
    tmp_path: Path, backend: Backend, gateway: GatewayFactory
) -> None:
    config = tls_config(tmp_path, [proxy_site(backend, ["localhost"])], tls={"profile": "modern"})
    start(gateway, config)
    port = https_port(config)
    old = client_context(root_path(tmp_path))
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        peer_names(port, "localhost", old)
    new = client_context(root_path(tmp_path))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:  # noqa: SIM117
        with new.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() == "TLSv1.3"


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_session_resumption(
    tmp_path: Path, backend: Backend, gateway: GatewayFactory, version: str
) -> None:
    config = tls_config(tmp_path, [proxy_site(backend, ["localhost"])])
    start(gateway, config)
    port = https_port(config)
    context = client_context(root_path(tmp_path))
    context.maximum_version = context.minimum_version = getattr(ssl.TLSVersion, version)

    def connect(session: ssl.SSLSession | None) -> tuple[ssl.SSLSession | None, bool]:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:  # noqa: SIM117
            with context.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                while tls.recv(65536):  # TLS 1.3 tickets arrive after the handshake
                    pass
                return tls.session, tls.session_reused

    session, reused = connect(None)
    assert not reused and session is not None
    _, reused = connect(session)
    assert reused, "the second connection did a full handshake"


def served_serial(port: int, name: str) -> int:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:  # noqa: SIM117
        with context.wrap_socket(raw, server_hostname=name) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def wait_until(check: Callable[[], bool], gw: Gateway, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met; log:\n{gw.stderr}")
        time.sleep(0.1)


def test_certificate_files_reloaded_when_they_change(
    tmp_path: Path, backend: Backend, gateway: GatewayFactory
) -> None:
    name = "files.example.com"
    cert, key = make_cert(tmp_path / "files", name)
    site = proxy_site(backend, [name], tls={"cert": str(cert), "key": str(key)})
    config = tls_config(tmp_path, [site], tls={"watch_interval": "0.5s"})
    gw = start(gateway, config)
    port = https_port(config)
    first = served_serial(port, name)

    # a new pair, written like a deploy script would: the gateway serves it without reload
    new_cert, new_key = make_cert(tmp_path / "new", name)
    os.replace(new_key, key)
    os.replace(new_cert, cert)
    wait_until(lambda: served_serial(port, name) != first, gw)
    second = served_serial(port, name)
    assert f"{cert} changed; new handshakes for {name} use it" in gw.stderr

    # a certificate that does not match its key: logged, the previous one stays
    other_cert, _ = make_cert(tmp_path / "other", name)
    os.replace(other_cert, cert)
    wait_until(lambda: "does not load" in gw.stderr, gw)
    assert "still serving the previous certificate for files.example.com" in gw.stderr
    assert served_serial(port, name) == second
    assert gw.proc is not None and gw.proc.poll() is None

    # the files removed (a revocation does that in the ACME store): said once, not as an
    # error, and the loaded certificate is still served
    cert.unlink()
    key.unlink()
    wait_until(lambda: f"{cert} was removed; still serving" in gw.stderr, gw)
    assert served_serial(port, name) == second
    assert gw.stderr.count("does not load") == 1
