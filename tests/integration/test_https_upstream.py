"""https:// upstreams through real TLS handshakes: verification against a private CA, the
name checked, mutual TLS, and keep-alive reuse of TLS connections."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Gateway, free_port
from tlsbackend import TestCA, TLSBackend


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


@pytest.fixture
def tls_backends() -> Iterator[Callable[..., TLSBackend]]:
    made: list[TLSBackend] = []

    def make(*args: Any, **kwargs: Any) -> TLSBackend:
        b = TLSBackend(*args, **kwargs)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


def proxy_config(upstream: str, tls: dict[str, Any] | None = None, **proxy: Any) -> dict[str, Any]:
    if tls is not None:
        proxy["tls"] = tls
    return {
        "listen": {"http": f"127.0.0.1:{free_port()}"},
        "access_log": {"format": "off"},
        "sites": [{"routes": [{"path": "/", "proxy": {"upstreams": [upstream], **proxy}}]}],
    }


def wait_for_log(gw: Gateway, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while text not in gw.stderr:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {text!r} in the log:\n{gw.stderr}")
        time.sleep(0.05)
    return gw.stderr


def test_private_ca_without_ca_is_a_502_with_a_clear_log_line(
    ca: TestCA, tls_backends: Callable[..., TLSBackend], gateway: Callable[..., Gateway]
) -> None:
    backend = tls_backends(*ca.issue("server", ["127.0.0.1"]))
    gw = gateway(proxy_config(backend.url))

    r = httpx.get(gw.url + "/x", timeout=10)

    assert r.status_code == 502
    assert r.headers["content-type"] == "application/problem+json"
    assert "127.0.0.1" not in r.text and "certificate" not in r.text.lower()
    log = wait_for_log(gw, "certificate verify failed")
    assert "unable to get local issuer certificate" in log or "self-signed" in log
    assert "set proxy.tls.ca" in log
    assert backend.requests == []


def test_private_ca_with_ca_passes(
    ca: TestCA, tls_backends: Callable[..., TLSBackend], gateway: Callable[..., Gateway]
) -> None:
    backend = tls_backends(*ca.issue("server", ["127.0.0.1"]))
    gw = gateway(proxy_config(backend.url, {"ca": str(ca.cert_file)}))

    r = httpx.get(gw.url + "/hello?a=1", headers={"Host": "shop.example.test"}, timeout=10)

    assert r.status_code == 200, r.text
    seen = r.json()
    assert seen["path"] == "/hello?a=1"
    headers = dict(seen["headers"])
    # an https upstream is its own virtual host: it gets its own name by default
    assert headers["host"] == f"127.0.0.1:{backend.port}"
    assert headers["x-forwarded-host"] == "shop.example.test"


def test_preserve_host_true_sends_the_clients_host(
    ca: TestCA, tls_backends: Callable[..., TLSBackend], gateway: Callable[..., Gateway]
) -> None:
    backend = tls_backends(*ca.issue("server", ["127.0.0.1"]))
    gw = gateway(proxy_config(backend.url, {"ca": str(ca.cert_file)}, preserve_host=True))

    r = httpx.get(gw.url + "/", headers={"Host": "shop.example.test"}, timeout=10)

    assert dict(r.json()["headers"])["host"] == "shop.example.test"


def test_server_name_is_what_gets_verified(
    ca: TestCA, tls_backends: Callable[..., TLSBackend], gateway: Callable[..., Gateway]
) -> None:
    # the certificate names api.internal.test only; the URL is an IP address
    backend = tls_backends(*ca.issue("server", ["api.internal.test"]))
    wrong = gateway(proxy_config(backend.url, {"ca": str(ca.cert_file)}))
    right = gateway(
        proxy_config(backend.url, {"ca": str(ca.cert_file), "server_name": "api.internal.test"})
    )
    other = gateway(
        proxy_config(backend.url, {"ca": str(ca.cert_file), "server_name": "other.internal.test"})
    )

    assert httpx.get(wrong.url + "/", timeout=10).status_code == 502
    assert "set proxy.tls.server_name" in wait_for_log(wrong, "certificate verify failed")
    assert httpx.get(right.url + "/", timeout=10).status_code == 200
    assert httpx.get(other.url + "/", timeout=10).status_code == 502
    assert "Hostname mismatch" in wait_for_log(other, "certificate verify failed")


def test_verify_false_accepts_any_certificate(
    ca: TestCA, tls_backends: Callable[..., TLSBackend], gateway: Callable[..., Gateway]
) -> None:
    backend = tls_backends(*ca.issue("server", ["elsewhere.test"]))
    gw = gateway(proxy_config(backend.url, {"verify": False}))

    assert httpx.get(gw.url + "/", timeout=10).status_code == 200


def test_mutual_tls(
    tmp_path: Path,
    ca: TestCA,
    tls_backends: Callable[..., TLSBackend],
    gateway: Callable[..., Gateway],
) -> None:
    client_ca = TestCA(tmp_path, "client CA")
    cert, key = ca.issue("server", ["127.0.0.1"])
    backend = tls_backends(cert, key, client_ca=client_ca.cert_file)
    client_cert, client_key = client_ca.issue("gateway", ["bastion-gateway"], client=True)
    with_cert = gateway(
        proxy_config(
            backend.url,
            {
                "ca": str(ca.cert_file),
                "client_cert": str(client_cert),
                "client_key": str(client_key),
            },
        )
    )
    without = gateway(proxy_config(backend.url, {"ca": str(ca.cert_file)}))

    r = httpx.get(with_cert.url + "/with", timeout=10)
    assert r.status_code == 200
    assert backend.server.client_subjects == ["bastion-gateway"]

    r = httpx.get(without.url + "/without", timeout=10)
    assert r.status_code == 502
    assert r.headers["content-type"] == "application/problem+json"
    assert [e["path"] for e in backend.requests] == ["/with"]
    assert "proxy.tls.client_cert" in wait_for_log(without, "TLS handshake failed")


def test_keep_alive_reuses_one_tls_connection(
    ca: TestCA, tls_backends: Callable[..., TLSBackend], gateway: Callable[..., Gateway]
) -> None:
    backend = tls_backends(*ca.issue("server", ["127.0.0.1"]))
    gw = gateway(proxy_config(backend.url, {"ca": str(ca.cert_file)}))

    with httpx.Client(timeout=10) as client:
        for i in range(20):
            r = client.get(f"{gw.url}/n{i}")
            assert r.status_code == 200
            assert json.loads(r.text)["path"] == f"/n{i}"
        big = client.get(f"{gw.url}/bytes?n=3000000")
        assert len(big.content) == 3_000_000

    assert len(backend.requests) == 21
    assert backend.connections == 1


def test_plain_http_port_named_https_is_a_502_with_a_hint(
    backend: Any, gateway: Callable[..., Gateway]
) -> None:
    gw = gateway(proxy_config(backend.url.replace("http://", "https://")))

    assert httpx.get(gw.url + "/", timeout=10).status_code == 502
    wait_for_log(gw, "TLS handshake failed")


def test_a_stalled_handshake_counts_in_the_connect_timeout(
    gateway: Callable[..., Gateway],
) -> None:
    # accepts TCP connections and never answers the ClientHello
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        gw = gateway(proxy_config(f"https://127.0.0.1:{port}", timeouts={"connect": "500ms"}))

        r = httpx.get(gw.url + "/", timeout=30)

        assert r.status_code == 504
        assert r.headers["content-type"] == "application/problem+json"
        wait_for_log(gw, "connect timed out")
