"""Section 6: reload, shutdown, workers, access log, listeners — through real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Backend, Gateway, free_port, simple_config, wait_for_port


def _respond_config(port: int, body: str, upstream: str | None = None) -> dict[str, Any]:
    routes: list[dict[str, Any]] = [{"path": "= /version", "respond": {"body": body}}]
    if upstream:
        routes.append({"path": "/", "proxy": {"upstreams": [upstream]}})
    return {
        "listen": {"http": f"127.0.0.1:{port}"},
        "access_log": {"format": "off"},
        "sites": [{"hosts": ["*"], "routes": routes}],
    }


def _wait(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.02)


class _Load:
    """Clients looping on GETs (keep-alive and new connections) in threads."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.stop = threading.Event()
        self.ok = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._run, args=(i % 2 == 0,), daemon=True)
            for i in range(threads)
        ]

    def _run(self, keep_alive: bool) -> None:
        client = httpx.Client(timeout=10.0) if keep_alive else None
        while not self.stop.is_set():
            try:
                r = client.get(self.url) if client else httpx.get(self.url, timeout=10.0)
                if r.status_code != 200:
                    raise RuntimeError(f"status {r.status_code}: {r.text[:200]}")
                with self.lock:
                    self.ok += 1
            except Exception as exc:
                with self.lock:
                    self.failures.append(repr(exc))
        if client:
            client.close()

    def __enter__(self) -> _Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)


def test_reload_under_load_has_zero_failures(gateway: Any, backend: Backend) -> None:
    port = free_port()
    gw: Gateway = gateway(_respond_config(port, "v0", backend.url))
    with _Load(gw.url + "/api/item") as load:
        _wait(lambda: load.ok > 20)
        for n in range(1, 21):
            gw.reload(
                _respond_config(port, f"v{n}", backend.url), wait_for="configuration reloaded"
            )
        _wait(lambda: load.ok > 200)
    assert load.failures == []
    assert httpx.get(gw.url + "/version").text == "v20"
    assert gw.stderr.count("configuration reloaded") == 20


def test_reload_keeps_rate_limit_counts(gateway: Any, tmp_path: Path) -> None:
    """The limit store outlives a plan: a reload (same or changed config) does not hand a
    client a fresh bucket, even for a window too short to be saved to disk."""
    port = free_port()
    config = _respond_config(port, "v1")
    config["data_dir"] = str(tmp_path / "data")
    config["sites"][0]["routes"][0]["rate_limits"] = [{"rate": "3/30s", "key": "client_ip"}]
    gw: Gateway = gateway(config)
    url = gw.url + "/version"
    assert [httpx.get(url).status_code for _ in range(4)] == [200, 200, 200, 429]
    gw.reload(wait_for="configuration reloaded")
    assert httpx.get(url).status_code == 429
    config["sites"][0]["routes"][0]["respond"]["body"] = "v2"
    gw.reload(config, wait_for="configuration reloaded")
    refused = httpx.get(url)
    assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 10
    assert not (tmp_path / "data" / "ratelimit.json").exists()  # held in memory only


def test_reload_empties_the_response_cache(gateway: Any, backend: Backend, tmp_path: Path) -> None:
    """The one kind of state a reload drops (docs/caching.md): answers stored under the old
    routes are not served under the new ones."""
    port = free_port()
    config = _respond_config(port, "v1", backend.url)
    config["data_dir"] = str(tmp_path / "data")
    config["sites"][0]["routes"][1]["cache"] = {"ttl": "1m"}
    gw: Gateway = gateway(config)
    url = gw.url + "/api/item"
    assert [httpx.get(url).headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]
    gw.reload(wait_for="configuration reloaded")
    assert [httpx.get(url).headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]
    assert len(backend.requests) == 2


def test_bad_reload_keeps_the_running_config(gateway: Any) -> None:
    port = free_port()
    gw: Gateway = gateway(_respond_config(port, "good"))
    gw.reload(
        f"listen: {{http: 127.0.0.1:{port}}}\nsites:\n  - routes:\n      - path: /\n"
        "        respond: {stauts: 200}\n",
        wait_for="reload rejected",
    )
    assert "bastion.yaml:5" in gw.stderr and "did you mean 'status'" in gw.stderr
    r = httpx.get(gw.url + "/version")
    assert r.status_code == 200 and r.text == "good"


def test_reload_opens_new_listeners_and_keeps_old_ones(gateway: Any) -> None:
    port, port2 = free_port(), free_port()
    gw: Gateway = gateway(_respond_config(port, "one"))
    with httpx.Client() as client:
        assert client.get(gw.url + "/version").text == "one"
        config = _respond_config(port, "two")
        config["listen"]["http"] = [f"127.0.0.1:{port}", f"127.0.0.1:{port2}"]
        gw.reload(config, wait_for="configuration reloaded")
        # the same keep-alive connection now sees the new plan
        assert client.get(gw.url + "/version").text == "two"
    assert httpx.get(f"http://127.0.0.1:{port2}/version").text == "two"


def test_a_reload_sets_the_limits_of_the_connections_opened_after_it(gateway: Any) -> None:
    """Each connection follows the limits of the plan in force when it opened, the metrics
    listener's included: a reload lowering the head limit refuses a head that passed, on a
    new connection, and an open one keeps the limit it opened with."""
    port, metrics = free_port(), free_port()
    config = _respond_config(port, "one")
    config["metrics"] = {"listen": f"127.0.0.1:{metrics}"}
    gw: Gateway = gateway(config)
    big = {"X-Filler": "a" * 3000}
    metrics_url = f"http://127.0.0.1:{metrics}/metrics"
    with httpx.Client() as before:
        assert before.get(gw.url + "/version", headers=big).status_code == 200
        assert httpx.get(metrics_url, headers=big).status_code == 200
        config["limits"] = {"max_header_bytes": 2048}
        gw.reload(config, wait_for="configuration reloaded")
        assert before.get(gw.url + "/version", headers=big).status_code == 200
    assert httpx.get(gw.url + "/version", headers=big).status_code == 431
    assert httpx.get(gw.url + "/version").status_code == 200
    assert httpx.get(metrics_url, headers=big).status_code == 431
    assert httpx.get(metrics_url).status_code == 200


def test_in_flight_request_finishes_on_reload_and_shutdown(gateway: Any, backend: Backend) -> None:
    port = free_port()
    gw: Gateway = gateway(_respond_config(port, "v1", backend.url))
    results: list[httpx.Response] = []
    t = threading.Thread(
        target=lambda: results.append(httpx.get(gw.url + "/slow?s=1.5", timeout=10))
    )
    t.start()
    _wait(lambda: len(backend.requests) == 1)  # the request reached the backend
    gw.reload(_respond_config(port, "v2"), wait_for="configuration reloaded")
    gw.send_signal(signal.SIGTERM)
    t.join(10)
    assert results and results[0].status_code == 200 and results[0].json() == {"slow": True}
    assert gw.proc is not None and gw.proc.wait(10) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_shutdown_timeout_cuts_what_is_left(gateway: Any, backend: Backend) -> None:
    port = free_port()
    config = simple_config(backend.url, port, shutdown_timeout="0.5s")
    gw: Gateway = gateway(config)
    errors: list[BaseException] = []

    def slow() -> None:
        try:
            httpx.get(gw.url + "/slow?s=5", timeout=10)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=slow)
    t.start()
    _wait(lambda: len(backend.requests) == 1)
    started = time.monotonic()
    gw.send_signal(signal.SIGTERM)
    assert gw.proc is not None and gw.proc.wait(10) == 0
    assert time.monotonic() - started < 4
    t.join(10)
    assert errors, "the cut request should fail on the client side"


def _children(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def test_workers_are_supervised_and_restarted(gateway: Any, backend: Backend) -> None:
    port = free_port()
    gw: Gateway = gateway(simple_config(backend.url, port, workers=2))
    _wait(lambda: len(_children(gw.pid)) == 2)
    first = _children(gw.pid)
    for _ in range(20):
        assert httpx.get(gw.url + "/x").status_code == 200
    victim = sorted(first)[0]
    os.kill(victim, signal.SIGKILL)
    _wait(lambda: len(_children(gw.pid)) == 2 and victim not in _children(gw.pid))
    assert "restarting" in gw.stderr
    for _ in range(20):
        assert httpx.get(gw.url + "/x").status_code == 200
    gw.reload(wait_for="configuration reloaded")
    _wait(lambda: gw.stderr.count("configuration reloaded") >= 2)
    assert gw.stop() == 0


def test_json_access_log_and_reopen(gateway: Any, backend: Backend, tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "access.log"
    gw: Gateway = gateway(
        simple_config(backend.url, port, access_log={"format": "json", "path": str(log_path)})
    )
    r = httpx.post(gw.url + "/api/thing?q=1", content=b"12345", headers={"User-Agent": "t/1"})
    _wait(lambda: log_path.exists() and log_path.read_text().strip() != "")
    record = json.loads(log_path.read_text().splitlines()[0])
    assert record["request_id"] == r.headers["x-request-id"]
    assert record["method"] == "POST" and record["target"] == "/api/thing?q=1"
    assert record["status"] == 200 and record["route"] == "/"
    assert record["upstream"] == backend.url
    assert record["bytes_in"] == 5 and record["bytes_out"] > len(r.content)
    assert record["duration_ms"] >= record["upstream_ms"] >= 0
    assert record["user_agent"] == "t/1"
    rotated = tmp_path / "access.log.1"
    log_path.rename(rotated)
    gw.send_signal(signal.SIGUSR1)
    _wait(lambda: "access log reopened" in gw.stderr)
    httpx.get(gw.url + "/after")
    _wait(lambda: log_path.exists() and "/after" in log_path.read_text())
    assert "/after" not in rotated.read_text()


def test_combined_access_log(gateway: Any, backend: Backend, tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "combined.log"
    gw: Gateway = gateway(
        simple_config(backend.url, port, access_log={"format": "combined", "path": str(log_path)})
    )
    r = httpx.get(gw.url + "/c", headers={"Referer": "http://ref.test/", "User-Agent": "ua/2"})
    _wait(lambda: log_path.exists() and log_path.read_text() != "")
    line = log_path.read_text().splitlines()[0]
    assert line.startswith("127.0.0.1 - - [")
    assert '"GET /c HTTP/1.1" 200 ' in line and '"http://ref.test/" "ua/2"' in line
    assert f"rid={r.headers['x-request-id']}" in line and f"upstream={backend.url}" in line


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_ipv6_and_ipv4_listeners(gateway: Any, backend: Backend) -> None:
    assert _ipv6_loopback(), "this machine has no IPv6 loopback"
    port, port6 = free_port(), free_port()
    config = simple_config(backend.url, port)
    config["listen"]["http"] = [f"127.0.0.1:{port}", f"[::1]:{port6}"]
    gw: Gateway = gateway(config)
    wait_for_port(port6, "::1")
    assert httpx.get(f"http://[::1]:{port6}/six").status_code == 200
    assert httpx.get(gw.url + "/four").status_code == 200
    seen = [dict(r["headers"])["x-forwarded-for"] for r in backend.requests]
    assert seen == ["::1", "127.0.0.1"]


def test_watch_reloads_on_file_change(gateway: Any) -> None:
    port = free_port()
    config = _respond_config(port, "before")
    config["watch"] = True
    gw: Gateway = gateway(config)
    time.sleep(1.1)  # mtime granularity: make sure the rewrite changes it
    config["sites"][0]["routes"][0]["respond"]["body"] = "after"
    gw.write_config(config)
    _wait(lambda: "configuration reloaded" in gw.stderr)
    assert httpx.get(gw.url + "/version").text == "after"


def test_cli_reload_signals_through_the_pid_file(gateway: Any, tmp_path: Path) -> None:
    port = free_port()
    pid_file = tmp_path / "b.pid"
    config = _respond_config(port, "one")
    config["pid_file"] = str(pid_file)
    gw: Gateway = gateway(config)
    _wait(pid_file.exists)
    assert int(pid_file.read_text()) == gw.pid
    config["sites"][0]["routes"][0]["respond"]["body"] = "two"
    gw.write_config(config)
    out = subprocess.run(
        [sys.executable, "-m", "bastion", "reload", "-c", str(gw.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    _wait(lambda: "configuration reloaded" in gw.stderr)
    assert httpx.get(gw.url + "/version").text == "two"
    assert gw.stop() == 0
    assert not pid_file.exists()


def _mapped(pid: int, package: str) -> bool:
    """Whether the process has loaded a compiled module of ``package``."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return f"site-packages/{package}/" in maps


def test_plain_http_loads_no_tls_machinery_until_a_reload_adds_https(
    gateway: Any, tmp_path: Path
) -> None:
    """A plain-HTTP gateway does not pay for the ACME client and HTTP/2 (cryptography and
    h2: about 11 MB); a reload that adds an https listener brings them in and serves."""
    port, https = free_port(), free_port()
    gw: Gateway = gateway(_respond_config(port, "one"))
    assert httpx.get(gw.url + "/version").text == "one"
    assert not _mapped(gw.pid, "cryptography")
    config = _respond_config(port, "two")
    config["listen"]["https"] = f"127.0.0.1:{https}"
    config["data_dir"] = str(tmp_path / "data")
    config["sites"][0]["hosts"] = ["localhost"]
    gw.reload(config, wait_for="configuration reloaded")
    assert _mapped(gw.pid, "cryptography")
    root = tmp_path / "data" / "ca" / "root.crt"
    with httpx.Client(verify=ssl.create_default_context(cafile=root), http2=True) as client:
        r = client.get(f"https://localhost:{https}/version")
    assert r.text == "two" and r.http_version == "HTTP/2"
