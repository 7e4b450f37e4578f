"""The operator's commands (keys, status, certs, cache purge, stats, trust, reload) read
only what they need of the config, say which data dir they use, and `status` shows each
endpoint's counters once however many routes share it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Backend, Gateway

SECRETS = ("EDGES_JWT_SECRET", "EDGES_UPSTREAM_KEY", "EDGES_ADMIN_TOKEN")


def bastion(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in SECRETS}
    environment.pop("BASTION_DATA_DIR", None)
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bastion", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=environment,
    )


def secret_config(tmp_path: Path, admin_port: int = 1) -> Path:
    """A config whose JWT secret and upstream header secret are in the environment, as a
    service's would be, and whose admin token is too."""
    path = tmp_path / "bastion.yaml"
    path.write_text(
        f"""\
listen:
  http: 127.0.0.1:1
data_dir: ./data
pid_file: ./bastion.pid
admin:
  listen: 127.0.0.1:{admin_port}
  token: ${{EDGES_ADMIN_TOKEN}}
sites:
  - hosts: ["*"]
    routes:
      - path: /api/
        auth:
          jwt: {{secret: "${{EDGES_JWT_SECRET}}", algorithms: [HS256]}}
        headers:
          request:
            set: {{X-Api-Key: "${{EDGES_UPSTREAM_KEY}}"}}
        proxy:
          upstreams: ["http://127.0.0.1:9"]
"""
    )
    return path


COMMANDS = [
    ("keys", "list"),
    ("keys", "create", "--consumer", "me"),
    ("stats",),
    ("trust",),
    ("certs", "list"),
    ("cache", "purge", "--prefix", "/"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_secret_the_command_does_not_read_need_not_be_set(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    config = secret_config(tmp_path)
    out = bastion(*command, "-c", str(config))
    nothing_yet = command == ("stats",) and "no statistics" in out.stdout  # never served
    assert out.returncode == 0 or nothing_yet, out.stderr
    assert "EDGES_JWT_SECRET" not in out.stderr and "EDGES_UPSTREAM_KEY" not in out.stderr
    assert f"data dir: {tmp_path / 'data'} (from the data_dir of {config})" in out.stderr


def test_status_reads_no_secret_it_does_not_need(tmp_path: Path) -> None:
    out = bastion("status", "-c", str(secret_config(tmp_path)))
    # nothing runs: that is what it says, not that a JWT secret is missing
    assert out.returncode == 1
    assert "no pool status found" in out.stdout
    assert "EDGES_JWT_SECRET" not in out.stderr


def test_an_unset_admin_token_is_named_and_the_data_dir_read(tmp_path: Path) -> None:
    out = bastion("cache", "purge", "--prefix", "/", "-c", str(secret_config(tmp_path)))
    assert out.returncode == 0, out.stderr
    assert (
        "bastion.yaml:7: admin.token: environment variable EDGES_ADMIN_TOKEN is not set: "
        "the running gateway's admin API is not asked; using the data dir"
    ) in out.stderr
    assert "queued" in out.stdout
    # commands that never ask the gateway do not mention it
    assert "EDGES_ADMIN_TOKEN" not in bastion("keys", "list", cwd=tmp_path).stderr


def test_what_the_command_reads_is_still_checked_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_text("sites: []\ndata_dir: ${EDGES_UPSTREAM_KEY}/data\n")
    out = bastion("keys", "list", "-c", str(path))
    assert out.returncode == 1
    assert f"{path}:2: data_dir: environment variable EDGES_UPSTREAM_KEY is not set" in out.stderr
    path.write_text("sites: []\ndata_dir: ./a\ndata_dir: ./b\n")
    out = bastion("stats", "-c", str(path))
    assert out.returncode == 1 and f"{path}:3:1: data_dir: duplicate key" in out.stderr
    path.write_text("data_dir: ./a\n  pid_file: x\n")
    out = bastion("trust", "-c", str(path))
    assert out.returncode == 1 and out.stderr.startswith(f"{path}:2:")


def test_certs_renew_needs_the_acme_section_and_nothing_else(tmp_path: Path) -> None:
    config = secret_config(tmp_path)
    text = config.read_text().replace('  - hosts: ["*"]', "  - hosts: [api.example.com]")
    text = text.replace("  http: 127.0.0.1:1\n", "  http: 127.0.0.1:1\n  https: 127.0.0.1:2\n")
    config.write_text(text + 'acme:\n  eab: {key_id: kid, hmac_key: "${EDGES_EAB_KEY}"}\n')
    listed = bastion("certs", "list", "-c", str(config))
    assert listed.returncode == 0, listed.stderr
    assert "api.example.com" in listed.stdout and "EDGES_EAB_KEY" not in listed.stderr
    renew = bastion("certs", "renew", "-c", str(config))
    assert renew.returncode == 1
    assert "acme.eab.hmac_key: environment variable EDGES_EAB_KEY is not set" in renew.stderr
    assert "EDGES_JWT_SECRET" not in renew.stderr


def test_each_command_says_which_data_dir_it_uses_and_why(tmp_path: Path) -> None:
    default = (
        Path("/var/lib/bastion")
        if os.geteuid() == 0
        else Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local/share") / "bastion"
    )
    who = "root" if os.geteuid() == 0 else "a user other than root"
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    out = bastion("stats", cwd=empty)  # reads only: the machine's data dir stays as it is
    assert (
        f"data dir: {default} (default for {who}; no config file: bastion.yaml does not exist here)"
    ) in out.stderr
    given = tmp_path / "given"
    out = bastion("stats", "--json", "--data-dir", str(given), cwd=empty)
    assert f"data dir: {given} (--data-dir)" in out.stderr
    assert "data dir" not in out.stdout  # stdout stays the answer (JSON here) alone
    out = bastion("trust", cwd=empty, env={"BASTION_DATA_DIR": str(given)})
    assert f"data dir: {given} ($BASTION_DATA_DIR)" in out.stderr
    config = tmp_path / "bastion.yaml"
    config.write_text("sites: []\n")
    out = bastion("stats", cwd=tmp_path)
    assert f"data dir: {default} (default for {who}; {config} sets no data_dir)" in out.stderr


def test_reload_signals_though_this_shell_lacks_a_secret(
    tmp_path: Path,
    backend: Backend,
    gateway: Callable[..., Gateway],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EDGES_UPSTREAM_KEY", "the-upstream-key-of-the-service")
    gw = gateway(
        {
            "pid_file": str(tmp_path / "bastion.pid"),
            "sites": [
                {
                    "routes": [
                        {
                            "path": "/",
                            "headers": {"request": {"set": {"X-Key": "${EDGES_UPSTREAM_KEY}"}}},
                            "proxy": {"upstreams": [backend.url]},
                        }
                    ]
                }
            ],
        }
    )
    done = bastion("reload", "-c", str(gw.config_path))
    assert done.returncode == 0, done.stderr
    assert "reload requested" in done.stdout
    assert "not set in this shell: EDGES_UPSTREAM_KEY" in done.stderr
    assert f"pid file: {tmp_path / 'bastion.pid'}" in done.stderr
    deadline = time.monotonic() + 10
    while "configuration reloaded" not in gw.stderr and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "configuration reloaded" in gw.stderr  # the gateway had it: no error
    # a real mistake still stops it before the signal
    gw.config_path.write_text(gw.config_path.read_text() + "workers: many\n")
    refused = bastion("reload", "-c", str(gw.config_path))
    assert refused.returncode == 1 and "not reloading" in refused.stderr
    assert "workers" in refused.stderr


def _two_routes_one_backend(backend: Backend, tmp_path: Path) -> dict[str, Any]:
    proxy = {"upstreams": [backend.url]}
    return {
        "data_dir": str(tmp_path / "data"),
        "pid_file": str(tmp_path / "bastion.pid"),
        "sites": [
            {
                "routes": [
                    {"path": "/a/", "proxy": {**proxy, "balance": "least_requests"}},
                    {"path": "/b/", "proxy": proxy},
                ]
            }
        ],
    }


def test_status_shows_an_endpoint_shared_by_routes_once(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway]
) -> None:
    gw = gateway(_two_routes_one_backend(backend, tmp_path))
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        for path in ("/a/1", "/a/2", "/a/3", "/b/1", "/b/2"):
            assert client.get(path).status_code == 200

    def status(*extra: str) -> subprocess.CompletedProcess[str]:
        return bastion("status", "-c", str(gw.config_path), *extra)

    deadline = time.monotonic() + 15
    shown: dict[str, Any] = {"pools": []}
    while time.monotonic() < deadline:
        out = status("--json")
        shown = json.loads(out.stdout) if out.returncode == 0 else {"pools": []}
        if shown["pools"] and shown["pools"][0]["endpoints"][0]["requests"] == 5:
            break
        time.sleep(0.2)
    # one pool: the backend once, with the requests of both routes counted once
    [pool] = shown["pools"]
    [endpoint] = pool["endpoints"]
    assert endpoint["url"] == backend.url and endpoint["requests"] == 5
    assert len(pool["routes"]) == 2
    routes = shown["routes"]
    assert [r["policy"] for r in routes] == ["least_requests", "round_robin"]
    assert [r["pool"] for r in routes] == [pool["pool"]] * 2
    assert [r["endpoints"][0]["url"] for r in routes] == [backend.url] * 2
    text = status().stdout
    counted = [line for line in text.splitlines() if "healthy" in line]
    assert len(counted) == 1, text  # the figures' row, once
    assert "least_requests" in text and "round_robin" in text
