"""Smaller hardening points through real processes and sockets: the TLS key exchange groups
(Mozilla intermediate: X25519, P-256, P-384 only), the workers' status files (0600, removed
when their worker is gone), API keys in unrecognised forms masked in the access log."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from test_tls import https_port, make_cert, proxy_site, start, tls_config

from conftest import Backend, Gateway, simple_config

GatewayFactory = Callable[..., Gateway]

OPENSSL = shutil.which("openssl")


def _wait(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


# ---------------------------------------------------------------- TLS groups
def _s_client(port: int, name: str, *options: str) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    return subprocess.run(
        [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", name, *options],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )


def _temp_key(done: subprocess.CompletedProcess[str]) -> str | None:
    """The key exchange group of a finished handshake (s_client's "Server Temp Key")."""
    for line in done.stdout.splitlines():
        if line.startswith("Server Temp Key:"):
            return line
    return None


def test_only_the_intermediate_profiles_groups_are_offered(
    tmp_path: Path, backend: Backend, gateway: GatewayFactory
) -> None:
    # with an RSA certificate TLS 1.2 can use any group (an ECDSA P-256 one needs the
    # client to offer P-256 itself)
    cert, key = make_cert(tmp_path / "files", "rsa.test", rsa_key=True)
    sites = [
        proxy_site(backend, ["localhost"]),  # ECDSA P-256, from the local CA
        proxy_site(backend, ["rsa.test"], tls={"cert": str(cert), "key": str(key)}),
    ]
    config = tls_config(tmp_path, sites)
    start(gateway, config)
    port = https_port(config)
    handshakes = [("-tls1_3", "localhost"), ("-tls1_3", "rsa.test"), ("-tls1_2", "rsa.test")]
    for version, name in handshakes:
        for groups in ("secp521r1", "X448", "ffdhe2048", "X448:secp521r1:ffdhe3072"):
            done = _s_client(port, name, version, "-groups", groups)
            assert _temp_key(done) is None, (version, name, groups, done.stdout)
            assert "Cipher is (NONE)" in done.stdout
        # the older option name
        assert _temp_key(_s_client(port, name, version, "-curves", "secp521r1")) is None
    expected = {
        "X25519": "X25519",
        "P-256": "prime256v1",
        "P-384": "secp384r1",
        # offered first by the client, but not served: the server's own choice among the rest
        "secp521r1:P-256": "prime256v1",
        "X448:P-384": "secp384r1",
    }
    for version, name in handshakes:
        for groups, shown in expected.items():
            # (the exit status says nothing: s_client ends with an EOF of its own)
            temp_key = _temp_key(_s_client(port, name, version, "-groups", groups))
            assert temp_key is not None and shown in temp_key, (version, name, groups)
    # TLS 1.2 with the ECDSA certificate: the client offers P-256 for it, and X25519 is used
    temp_key = _temp_key(_s_client(port, "localhost", "-tls1_2", "-groups", "X25519:P-256"))
    assert temp_key is not None and "X25519" in temp_key
    # a client that offers everything gets X25519, the first of the list
    temp_key = _temp_key(_s_client(port, "localhost"))
    assert temp_key is not None and "X25519" in temp_key


# -------------------------------------------------------------- status files
def _status_files(directory: Path) -> dict[int, Path]:
    return {
        int(p.stem.removeprefix("worker-")): p
        for p in directory.glob("worker-*.json")
    }


def test_status_files_are_private_and_removed_with_their_worker(
    tmp_path: Path, backend: Backend, gateway: GatewayFactory
) -> None:
    data = tmp_path / "data"
    directory = data / "status"
    directory.mkdir(parents=True)
    # left by a worker that died long ago (a pid that is surely gone: a finished child)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    orphan = directory / f"worker-{gone.pid}.json"
    orphan.write_text(json.dumps({"pid": gone.pid, "instance": 1, "written": 0, "pools": []}))
    orphan.chmod(0o644)
    config = simple_config(backend.url, 0, workers=2, data_dir=str(data))
    del config["listen"]
    config["pid_file"] = str(tmp_path / "bastion.pid")
    gw = gateway(config)
    assert httpx.get(gw.url + "/x").status_code == 200
    _wait(lambda: len(_status_files(directory)) == 2 and not orphan.exists())
    files = _status_files(directory)
    for path in files.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # a worker killed without a chance to clean up: the next one removes its file
    victim = sorted(files)[0]
    os.kill(victim, signal.SIGKILL)
    _wait(lambda: victim not in _status_files(directory) and len(_status_files(directory)) == 2)
    for path in _status_files(directory).values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # `bastion status` removes a dead worker's file too (and does not show it)
    planted = directory / f"worker-{gone.pid}.json"
    planted.write_text(json.dumps({"pid": gone.pid, "instance": gw.pid, "written": 0,
                                   "pools": []}))
    shown = subprocess.run(
        [sys.executable, "-m", "bastion", "status", "-c", str(gw.config_path), "--json"],
        capture_output=True, text=True, timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert not planted.exists()
    assert gw.stop() == 0
    assert _status_files(directory) == {}


# ------------------------------------------------------- access log masking
def _log_records(gw: Gateway) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gw.stdout.splitlines() if line.startswith("{")]


def test_keys_in_unrecognised_forms_are_masked_in_the_access_log(
    tmp_path: Path, backend: Backend, gateway: GatewayFactory
) -> None:
    config = simple_config(backend.url, 0, access_log={"format": "json"})
    del config["listen"]
    config["sites"][0]["routes"] = [
        {
            "path": "/api/",
            "auth": {"api_keys": {"query": "api_key"}},
            "proxy": {"upstreams": [backend.url]},
        },
        {"path": "/", "proxy": {"upstreams": [backend.url]}},
    ]
    gw = gateway(config)
    secrets = [f"bk_leak{i}_{'z' * 20}" for i in range(8)]
    targets = [
        f"/api/items?API_KEY={secrets[0]}",  # the query name in another case
        f"/api/items;api_key={secrets[1]}",  # a path parameter
        f"/api/items?a=1;Api_Key={secrets[2]}&b=2",  # ";" as a query separator
        f"/open?x-api-key={secrets[3]}",  # the header's name as a parameter
        f"/open?X_API_KEY={secrets[4]}",  # ... in its CGI spelling
        f"/open?%41PI_KEY={secrets[5]}",  # percent-encoded
        f"/open;API_KEY={secrets[6]};v=1",
    ]
    with httpx.Client(base_url=gw.url) as client:
        for target in targets:
            assert client.get(target).status_code < 500
        # the referer is masked the same way
        client.get("/open", headers={"Referer": f"https://a.example/p?API_KEY={secrets[7]}"})
    gw.stop()
    records = _log_records(gw)
    assert len(records) == len(targets) + 1
    text = gw.stdout + gw.stderr
    for secret in secrets:
        assert secret not in text
    logged = [r["target"] for r in records]
    assert logged[:3] == [
        "/api/items?API_KEY=REDACTED",
        "/api/items;api_key=REDACTED",
        "/api/items?a=1;Api_Key=REDACTED&b=2",
    ]
    assert logged[6] == "/open;API_KEY=REDACTED;v=1"
    assert records[-1]["referer"] == "https://a.example/p?API_KEY=REDACTED"
