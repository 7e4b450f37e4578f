"""The command line: check, proxy quick mode, schema, demo."""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

from conftest import Backend, free_port, wait_for_port
from conftest import run_bastion as bastion

THREE_MISTAKES = """\
listen:
  http: 127.0.0.1:8080
sites:
  - hosts: ["*"]
    routes:
      - path: /api/
        strip_prefx: true
        proxy:
          upstreams: ["http://127.0.0.1:8000"]
          timeouts: {connect: fast}
      - path: /b/
        proxy: {upstreams: ["ftp://127.0.0.1:21"]}
"""


def test_check_reports_every_mistake_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_text(THREE_MISTAKES)
    out = bastion("check", "-c", str(path))
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert any(
        re.match(rf"{re.escape(str(path))}:7: .*strip_prefx.*did you mean 'strip_prefix'", ln)
        for ln in lines
    ), out.stderr
    assert any(ln.startswith(f"{path}:10: ") and "connect" in ln for ln in lines), out.stderr
    assert any(ln.startswith(f"{path}:12: ") and "upstreams[0]" in ln for ln in lines), out.stderr


def test_check_prints_the_plan_without_secrets(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_text(
        "listen: {http: '127.0.0.1:8080'}\nsites:\n  - hosts: [api.example.test]\n    routes:\n"
        "      - path: /\n        respond: {body: 'token ${SECRET_TOKEN}'}\n"
        "      - path: /api/\n        proxy: {upstreams: ['http://127.0.0.1:8000']}\n"
        "      - path: /saas/\n        proxy: {upstreams: ['http://127.0.0.1:8001']}\n"
        "        auth: {api_keys: {consumers: [web]}}\n"
        "        rate_limits: [{rate: 10/s, key: consumer}]\n"
        "        headers: {request: {inject: {Authorization: 'Bearer ${SECRET_TOKEN}'}}}\n"
        "        security_headers: true\n"
    )
    out = bastion(
        "check", "-c", str(path), env={"SECRET_TOKEN": "s3cr3t-value", "PATH": "/usr/bin"}
    )
    assert out.returncode == 0, out.stderr
    assert "http://127.0.0.1:8080" in out.stdout and "api.example.test" in out.stdout
    assert "/api/ -> proxy http://127.0.0.1:8000" in out.stdout
    # each route's policies, by name: the injected field is named, its value never shown
    assert (
        "    policies: auth api_keys (consumers web), rate limit 10/s by consumer, "
        "header rules (injects Authorization), security headers"
    ) in out.stdout
    assert "s3cr3t-value" not in out.stdout + out.stderr
    missing = bastion("check", "-c", str(path), env={"PATH": "/usr/bin"})
    assert missing.returncode == 1 and "SECRET_TOKEN" in missing.stderr
    assert f"{path}:6:" in missing.stderr


def test_schema_is_json_schema() -> None:
    out = bastion("schema")
    assert out.returncode == 0
    schema = json.loads(out.stdout)
    assert "sites" in schema["properties"]


def _serve(args: list[str], port: int, tmp_path: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion", *args],
        stdout=(tmp_path / "out").open("wb"),
        stderr=(tmp_path / "err").open("wb"),
        env=dict(os.environ, BASTION_DATA_DIR=str(tmp_path / "data")),
    )
    try:
        wait_for_port(port)
    except TimeoutError:
        proc.kill()
        raise
    return proc


def test_quick_proxy_mode(backend: Backend, tmp_path: Path) -> None:
    port = free_port()
    proc = _serve(["proxy", "--from", f"127.0.0.1:{port}", "--to", backend.url], port, tmp_path)
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/quick")
        assert r.status_code == 200 and backend.requests[-1]["path"] == "/quick"
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def _demo_ports() -> list[str]:
    return ["--admin-port", str(free_port()), "--metrics-port", str(free_port())]


def test_demo_prints_curl_lines_that_work(tmp_path: Path) -> None:
    port, https_port = free_port(), free_port()
    args = ["demo", "--port", str(port), "--https-port", str(https_port), "--no-traffic"]
    proc = _serve([*args, *_demo_ports()], port, tmp_path)
    try:
        deadline = time.monotonic() + 10
        while "Try:" not in (tmp_path / "out").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        printed = (tmp_path / "out").read_text()
        urls = re.findall(r"curl .*?(https?://\S+)", printed)
        assert len(urls) >= 8, printed
        root = tmp_path / "data" / "ca" / "root.crt"
        assert f"--cacert {root} https://localhost:{https_port}/api/hello" in printed
        with httpx.Client(follow_redirects=False) as client:
            assert client.get(f"http://127.0.0.1:{port}/api/hello").json()["message"]
            seen = client.get(f"http://127.0.0.1:{port}/api/headers").json()
            assert seen["headers_seen_by_backend"]["x-forwarded-for"] == "127.0.0.1"
            old = client.get(f"http://127.0.0.1:{port}/old/hello")
            assert old.status_code == 308 and old.headers["location"] == "/api/hello"
            assert client.delete(f"http://127.0.0.1:{port}/health").status_code == 405
            echoed = client.post(f"http://127.0.0.1:{port}/api/echo", content=b"hi there").json()
            assert echoed["received"] == "hi there"
            redirect = client.get(f"http://localhost:{port}/api/hello")
            assert redirect.status_code == 301
            assert redirect.headers["location"] == f"https://localhost:{https_port}/api/hello"
            # the cache, the rate limit and the API key the printed lines show
            first = client.get(f"http://127.0.0.1:{port}/api/time")
            again = client.get(f"http://127.0.0.1:{port}/api/time")
            assert (first.headers["x-cache"], again.headers["x-cache"]) == ("MISS", "HIT")
            assert again.json() == first.json()
            codes = [client.get(f"http://127.0.0.1:{port}/api/limited/hello").status_code
                     for _ in range(12)]
            assert codes[0] == 200 and 429 in codes, codes
            assert client.get(f"http://127.0.0.1:{port}/api/private/hello").status_code == 401
            created = subprocess.run(
                [sys.executable, "-m", "bastion", "keys", "create", "--consumer", "me"],
                capture_output=True, text=True, timeout=30,
                env=dict(os.environ, BASTION_DATA_DIR=str(tmp_path / "data")),
            )
            assert created.returncode == 0, created.stderr
            key = created.stdout.split()[0]
            deadline = time.monotonic() + 10  # the gateway re-reads the key file each second
            while time.monotonic() < deadline:
                private = client.get(
                    f"http://127.0.0.1:{port}/api/private/headers", headers={"X-API-Key": key}
                )
                if private.status_code == 200:
                    break
                time.sleep(0.2)
            assert private.json()["headers_seen_by_backend"]["x-consumer"] == "me"
        trusted = ssl.create_default_context(cafile=str(root))
        with httpx.Client(verify=trusted) as client:
            r = client.get(f"https://localhost:{https_port}/api/hello")
            assert r.status_code == 200 and r.json()["message"]
            assert r.headers["strict-transport-security"].startswith("max-age=")
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_output_cut_short_by_its_reader_is_no_error(tmp_path: Path) -> None:
    """`bastion schema | head -1`: the reader closes the pipe early; no traceback, exit 0
    (a BrokenPipeError once ended these commands)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion", "schema"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(10)
    proc.stdout.close()  # as `head` does once it has its lines
    err = proc.stderr.read().decode()
    assert proc.wait(30) == 0, err
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_certs_list_as_json_from_a_given_data_dir(tmp_path: Path) -> None:
    """`bastion certs list --json --data-dir D`: the docs tell users to give the data dir,
    and scripts want JSON."""
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text(
        "listen: {http: 127.0.0.1:1, https: 127.0.0.1:2}\n"
        "sites:\n  - hosts: [localhost]\n    tls: internal\n"
        "    routes: [{path: /, respond: {}}]\n"
    )
    data = tmp_path / "given"
    env = {k: v for k, v in os.environ.items() if k != "BASTION_DATA_DIR"}
    listed = subprocess.run(
        [sys.executable, "-m", "bastion", "certs", "list", "--json", "-c", str(cfg),
         "--data-dir", str(data)],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["names"] == ["localhost"] and row["source"] == "local CA"
    assert row["not_after"] and row["last_error"] is None
    assert (data / "ca" / "root.crt").exists()  # the data dir given, not the default one
