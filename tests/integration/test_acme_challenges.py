"""ACME challenge types and account options against a real Pebble: DNS-01 through an
operator hook that talks to pebble-challtestsrv (Pebble's DNS server), TLS-ALPN-01 on the
https listener alone, External Account Binding, and a CA rejecting most nonces."""

from __future__ import annotations

import json
import socket
import ssl
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import Backend, Gateway, free_port
from pebble_support import (  # noqa: F401 (pebble_fixture is a fixture)
    NAMES,
    Pebble,
    acme_config,
    https_get,
    pebble_fixture,
    save_root,
    wait_for_log,
)

HOOK = """\
import json, os, sys, urllib.request
action, record, value = sys.argv[1:4]
assert os.environ["ACME_RECORD"] == record and os.environ["ACME_TXT_VALUE"] == value
with open({log!r}, "a") as log:
    log.write(json.dumps([action, record, value, os.environ["ACME_DOMAIN"]]) + "\\n")
path = "/set-txt" if action == "present" else "/clear-txt"
body = {{"host": record + "."}}
if action == "present":
    body["value"] = value
request = urllib.request.Request(
    "http://127.0.0.1:{port}" + path, data=json.dumps(body).encode(), method="POST"
)
urllib.request.urlopen(request, timeout=10).read()
"""


def write_hook(tmp_path: Path, pebble: Pebble) -> tuple[Path, Path]:
    script, log = tmp_path / "dns-hook.py", tmp_path / "dns-hook.log"
    script.write_text(HOOK.format(log=str(log), port=pebble.challtestsrv))
    return script, log


def test_dns01_hook_gets_a_wildcard_certificate(
    tmp_path: Path,
    backend: Backend,
    pebble: Callable[..., Pebble],
    gateway: Callable[..., Gateway],
) -> None:
    http, https = free_port(), free_port()
    ca = pebble(http)
    script, hook_log = write_hook(tmp_path, ca)
    config = acme_config(tmp_path, backend, ca, http, https)
    config["acme"]["dns_hook"] = {"command": [sys.executable, str(script)], "timeout": "30s"}
    names = ["bastion.test", "*.bastion.test"]
    config["sites"][0]["hosts"] = names
    gw = gateway(config)
    wait_for_log(gw, "acme: serving the certificate for bastion.test, *.bastion.test")
    root = save_root(ca, tmp_path)
    for name in ("api.bastion.test", "bastion.test"):
        response = https_get(https, name, root)
        assert response.startswith(b"HTTP/1.1 200"), response[:300]
    calls = [json.loads(line) for line in hook_log.read_text().splitlines()]
    # the wildcard authorization was answered by the hook, then cleaned up
    assert [c[0] for c in calls] == ["present", "cleanup"], calls
    assert calls[0][1] == "_acme-challenge.bastion.test"
    assert calls[0][3] == "bastion.test"
    assert len(calls[0][2]) == 43 and calls[0][2] == calls[1][2]  # base64url SHA-256
    assert "answering dns-01 for bastion.test" in gw.stderr
    assert "answering http-01 for bastion.test" in gw.stderr


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "import sys\nprint('no credentials for zone bastion.test', file=sys.stderr)\n"
            "sys.exit(3)\n",
            "exited with status 3: no credentials for zone bastion.test",
        ),
        ("import time\ntime.sleep(30)\n", "did not finish within 1s"),
    ],
    ids=["exit-status", "timeout"],
)
def test_failing_dns_hook_is_reported(
    tmp_path: Path,
    backend: Backend,
    pebble: Callable[..., Pebble],
    gateway: Callable[..., Gateway],
    body: str,
    expected: str,
) -> None:
    http, https = free_port(), free_port()
    ca = pebble(http)
    script = tmp_path / "broken-hook.py"
    script.write_text(body)
    config = acme_config(tmp_path, backend, ca, http, https)
    config["acme"]["dns_hook"] = {"command": [sys.executable, str(script)], "timeout": "1s"}
    config["sites"][0]["hosts"] = ["*.bastion.test"]
    gw = gateway(config)
    wait_for_log(gw, "acme: could not get a certificate for *.bastion.test")
    log = gw.stderr
    assert expected in log, log
    assert "run it by hand" in log and "Retrying in" in log


@pytest.mark.parametrize("workers", [1, 2])
def test_tls_alpn01_without_http_listener(
    tmp_path: Path,
    backend: Backend,
    pebble: Callable[..., Pebble],
    gateway: Callable[..., Gateway],
    workers: int,
) -> None:
    # with two workers the CA's connections reach either one: both must answer
    https = free_port()
    ca = pebble(free_port(), tls_port=https)
    config = acme_config(tmp_path, backend, ca, 0, https)
    config["listen"] = {"http": [], "https": f"127.0.0.1:{https}"}
    config["workers"] = workers
    gw = gateway(config, port=https)
    wait_for_log(gw, "acme: serving the certificate for bastion.test, www.bastion.test")
    assert "answering tls-alpn-01 for bastion.test" in gw.stderr
    root = save_root(ca, tmp_path)
    for name in NAMES:
        response = https_get(https, name, root)
        assert response.startswith(b"HTTP/1.1 200"), response[:300]


def test_external_account_binding(
    tmp_path: Path,
    backend: Backend,
    pebble: Callable[..., Pebble],
    gateway: Callable[..., Gateway],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hmac_key = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
    http, https = free_port(), free_port()
    ca = pebble(http, eab={"kid-1": hmac_key})

    # without EAB the CA refuses the account, and the log says what to set
    first = gateway(acme_config(tmp_path / "a", backend, ca, http, https))
    wait_for_log(first, "acme: could not get a certificate")
    assert "externalAccountRequired" in first.stderr and "acme.eab" in first.stderr
    first.stop()

    monkeypatch.setenv("BASTION_TEST_EAB_KEY", hmac_key)
    config = acme_config(tmp_path / "b", backend, ca, http, https)
    config["acme"]["eab"] = {"key_id": "kid-1", "hmac_key": "${BASTION_TEST_EAB_KEY}"}
    gw = gateway(config)
    wait_for_log(gw, "acme: serving the certificate for bastion.test, www.bastion.test")
    response = https_get(https, "bastion.test", save_root(ca, tmp_path))
    assert response.startswith(b"HTTP/1.1 200"), response[:300]
    assert hmac_key not in gw.stderr and hmac_key not in gw.stdout


def test_ca_rejecting_most_nonces_is_survived(
    tmp_path: Path,
    backend: Backend,
    pebble: Callable[..., Pebble],
    gateway: Callable[..., Gateway],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BASTION_ACME_RETRY", "1")
    http, https = free_port(), free_port()
    ca = pebble(http, nonce_reject=80)
    config = acme_config(tmp_path, backend, ca, http, https)
    config["log_level"] = "debug"
    gw = gateway(config)
    wait_for_log(gw, "acme: serving the certificate for bastion.test, www.bastion.test", 120)
    assert gw.stderr.count("badNonce from the CA, retrying") >= 5, gw.stderr
    response = https_get(https, "www.bastion.test", save_root(ca, tmp_path))
    assert response.startswith(b"HTTP/1.1 200"), response[:300]


def test_rsa_key_type(
    tmp_path: Path,
    backend: Backend,
    pebble: Callable[..., Pebble],
    gateway: Callable[..., Gateway],
) -> None:
    http, https = free_port(), free_port()
    ca = pebble(http)
    config = acme_config(tmp_path, backend, ca, http, https)
    config["acme"]["key_type"] = "rsa3072"
    gw = gateway(config)
    wait_for_log(gw, "acme: serving the certificate for bastion.test, www.bastion.test")
    root = save_root(ca, tmp_path)
    context = ssl.create_default_context(cafile=str(root))
    with socket.create_connection(("127.0.0.1", https), timeout=10) as raw:  # noqa: SIM117
        with context.wrap_socket(raw, server_hostname="bastion.test") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    key = x509.load_der_x509_certificate(der).public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 3072
