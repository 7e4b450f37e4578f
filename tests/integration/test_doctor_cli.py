"""`bastion doctor` as a user runs it: a subprocess of `python -m bastion doctor`, its exit
code, its text and JSON, and that it changed nothing (no data dir, no local CA)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from conftest import Gateway, free_port
from rediskit import RedisServer
from rediskit import redis_server as redis_server


def doctor(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "bastion.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def site(hosts: list[str]) -> dict[str, Any]:
    return {"hosts": hosts, "routes": [{"path": "/", "respond": {"body": "ok"}}]}


def test_a_good_config_offline_passes_and_writes_nothing(tmp_path: Path) -> None:
    config = {
        "listen": {"http": f"127.0.0.1:{free_port()}", "https": f"127.0.0.1:{free_port()}"},
        "sites": [site(["localhost"])],  # tls from the local CA: none may be created
    }
    data = tmp_path / "data"
    result = doctor("-c", str(write(tmp_path, config)), "--offline", "--data-dir", str(data))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS  config" in result.stdout
    assert "SKIP  dns       --offline" in result.stdout
    assert "(offline)" in result.stdout.splitlines()[-1]
    assert not data.exists()


def test_a_broken_config_fails_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_text("listen:\n  http: 127.0.0.1:99999\nsites:\n  - routes: []\n")
    result = doctor("-c", str(path), "--offline", "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 1
    assert f"FAIL  config    {path}:2: listen.http" in result.stdout
    assert "SKIP  bind      the config does not load" in result.stdout
    assert "Traceback" not in result.stderr


def test_json_shape(tmp_path: Path) -> None:
    config = {"listen": {"http": f"127.0.0.1:{free_port()}"}, "sites": [site(["*"])]}
    data = tmp_path / "data"
    result = doctor(
        "-c", str(write(tmp_path, config)), "--json", "--offline", "--data-dir", str(data)
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "ok" and report["offline"] is True
    assert report["data_dir"] == str(data)
    ids = [c["id"] for c in report["checks"]]
    assert ids[:2] == ["config", "bind"] and "caa" in ids and "redis" in ids
    for check in report["checks"]:
        assert check["status"] in ("PASS", "WARN", "FAIL", "SKIP")
        assert check["findings"] and set(check["findings"][0]) == {"status", "found", "fix"}
    assert sum(report["counts"].values()) == len(report["checks"])


def test_a_port_in_use_fails_the_run(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = {"listen": {"http": f"127.0.0.1:{port}"}, "sites": [site(["*"])]}
        result = doctor("-c", str(write(tmp_path, config)), "--json", "--offline")
    assert result.returncode == 1
    bind = next(c for c in json.loads(result.stdout)["checks"] if c["id"] == "bind")
    assert bind["status"] == "FAIL" and "already in use" in bind["findings"][0]["found"]


def test_a_running_bastion_holding_its_port_is_no_failure(
    tmp_path: Path, gateway: Callable[..., Gateway]
) -> None:
    pid_file = tmp_path / "bastion.pid"
    gw = gateway({"sites": [site(["*"])], "pid_file": str(pid_file)})
    result = doctor("-c", str(gw.config_path), "--offline")
    assert result.returncode == 0, result.stdout
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("PASS  bind")]
    assert "held by pid" in line and "bastion run" in line


def test_the_demo_prints_the_doctors_verdict(tmp_path: Path) -> None:
    ports = [str(free_port()) for _ in range(4)]
    out = tmp_path / "out"
    args = ["--port", ports[0], "--https-port", ports[1], "--admin-port", ports[2],
            "--metrics-port", ports[3], "--no-traffic"]  # fmt: skip
    env = dict(os.environ, BASTION_DATA_DIR=str(tmp_path / "data"))
    with out.open("wb") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bastion", "demo", *args], stdout=stdout,
            stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while "Try:" not in out.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, out.read_text()
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(10)
    (verdict,) = [line for line in out.read_text().splitlines() if line.startswith("doctor:")]
    assert "PASS" in verdict and "(offline)" in verdict and "FAIL" not in verdict, verdict


def test_the_redis_check_uses_the_gateways_own_client(
    tmp_path: Path, redis_server: Callable[[], RedisServer]
) -> None:
    """state.redis reachable (over TCP and the Unix socket), refusing the password, dead,
    and evicting any key when full: what the doctor says of each."""
    redis = redis_server()

    def run(state: dict[str, Any]) -> dict[str, Any]:
        config = {
            "listen": {"http": f"127.0.0.1:{free_port()}"},
            "state": state,
            "sites": [site(["*"])],
        }
        result = doctor(
            "-c", str(write(tmp_path, config)), "--json", "--data-dir", str(tmp_path / "d")
        )
        report = json.loads(result.stdout)
        found: dict[str, Any] = next(c for c in report["checks"] if c["id"] == "redis")
        return found

    up = run({"redis": redis.url})
    assert up["status"] == "PASS", up
    assert f"127.0.0.1:{redis.port}" in up["findings"][0]["found"]
    assert "version" in up["findings"][0]["found"]
    assert run({"redis": redis.unix_url})["status"] == "PASS"

    redis.command("CONFIG", "SET", "requirepass", "s3cret-pw")
    refused = run({"redis": f"redis://:wrong-pw@127.0.0.1:{redis.port}/0"})
    assert refused["status"] == "FAIL", refused
    assert "credentials" in refused["findings"][0]["found"]
    assert "wrong-pw" not in json.dumps(refused)
    good = run({"redis": f"redis://:s3cret-pw@127.0.0.1:{redis.port}/0"})
    assert good["status"] == "PASS", good

    evicting = RedisServer(tmp_path / "evicting", ("--maxmemory-policy", "allkeys-lru"))
    (tmp_path / "evicting").mkdir()
    evicting.start()
    try:
        lru = run({"redis": evicting.url})
        assert lru["status"] == "WARN", lru
        assert "allkeys-lru" in lru["findings"][-1]["found"]
    finally:
        evicting.stop()
    dead = run({"redis": evicting.url})
    assert dead["status"] == "FAIL" and "does not answer" in dead["findings"][0]["found"], dead
