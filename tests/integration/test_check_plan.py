"""`bastion check` compiles as the gateway would, with no side effects: no local CA, no
certificate, no saved OpenAPI copy, not even the data dir; it shows health checks and
retries; and an OpenAPI document that the gateway could not use is a config error with
file, line and key, both when given by URL (fetched now) and as a local file."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import free_port
from conftest import run_bastion as bastion

OPENAPI = {
    "openapi": "3.1.0",
    "info": {"title": "t", "version": "1"},
    "paths": {"/api/items": {"get": {"responses": {"200": {"description": "ok"}}}}},
}


class _Docs(BaseHTTPRequestHandler):
    answers: dict[str, tuple[int, bytes]] = {
        "/openapi.json": (200, json.dumps(OPENAPI).encode()),
        "/not-openapi.json": (200, b'{"hello": "world"}'),
        "/page.html": (200, b"<html>an app's home page</html>"),
    }

    def do_GET(self) -> None:
        status, body = self.answers.get(self.path, (404, b"not found"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(name="docs")
def docs_server() -> Iterator[str]:
    """A real HTTP server answering an OpenAPI document, a JSON that is not one, a page
    and 404s: what a backend's /openapi.json URL may give."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Docs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "bastion.yaml"
    path.write_text(
        f'listen: {{http: "127.0.0.1:{free_port()}", https: "127.0.0.1:{free_port()}"}}\n'
        f"data_dir: {tmp_path / 'data'}\n" + body
    )
    return path


def test_check_leaves_no_trace_and_says_what_start_will_issue(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        """\
sites:
  - hosts: [localhost, api.localhost]
    routes:
      - path: /
        auth: {api_keys: {}}
        rate_limits: [{rate: 10/minute, key: consumer}]
        cache: {ttl: 10s}
        proxy: {upstreams: ["http://127.0.0.1:8000"]}
""",
    )
    out = bastion("check", "-c", str(config))
    assert out.returncode == 0, out.stderr
    assert "certificates the local CA issues at start" in out.stdout
    assert "  localhost, api.localhost" in out.stdout
    # nothing written: no data dir, so neither a CA, a certificate, a key nor a store
    assert not (tmp_path / "data").exists(), list((tmp_path / "data").rglob("*"))
    assert "local CA issued" not in out.stderr and "created the local CA" not in out.stderr


def test_check_shows_health_checks_and_retries(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        """\
sites:
  - hosts: ["*"]
    routes:
      - path: /api/
        proxy:
          upstreams: ["http://127.0.0.1:8000", "http://127.0.0.1:8001"]
          health: {path: /healthz, interval: 3s, fall: 2}
          retries: {attempts: 3, on_status: [502, 503]}
          passive: {failures: 4, ejection: 20s}
      - path: /slow/
        proxy:
          upstreams: ["http://127.0.0.1:8000"]
          retries: {attempts: 1}
""",
    )
    out = bastion("check", "-c", str(config))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "health: GET /healthz every 3s (timeout 2s, down after 2, up after 2)" in text, text
    assert "passive: eject an endpoint for 20s after 4 connect errors or 5xx in a row" in text
    assert "retries: up to 3 tries on a lost connection or status 502, 503" in text, text
    assert "connect failures: tried on another endpoint" in text
    slow = text[text.index("/slow/") :]
    assert "health: no active checks" in slow and "retries: none" in slow, slow


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/missing.json", "it answered 404 Not Found"),
        ("/not-openapi.json", "is not an OpenAPI 3.0 or 3.1 document"),
        ("/page.html", "not an OpenAPI document"),
    ],
)
def test_an_openapi_url_that_gives_no_document_is_a_config_error(
    tmp_path: Path, docs: str, path: str, expected: str
) -> None:
    config = write(
        tmp_path,
        f"""\
sites:
  - hosts: ["*"]
    routes:
      - path: /api/
        validation:
          openapi: "{docs}{path}"
        proxy: {{upstreams: ["http://127.0.0.1:8000"]}}
""",
    )
    out = bastion("check", "-c", str(config))
    assert out.returncode == 1, out.stdout
    assert "configuration OK" not in out.stdout
    first = out.stderr.strip().splitlines()[0]
    assert first.startswith(f"{config}:8: sites[0].routes[0].validation.openapi: "), out.stderr
    assert expected in first, first
    assert "503" in first  # what the running gateway would do about it
    # offline: nothing fetched, the check passes and says what it did not look at
    offline = bastion("check", "--offline", "-c", str(config))
    assert offline.returncode == 0, offline.stderr
    assert "warnings:" in offline.stdout and "was not fetched (offline)" in offline.stdout


def test_a_good_openapi_url_passes_and_no_copy_is_saved(tmp_path: Path, docs: str) -> None:
    config = write(
        tmp_path,
        f"""\
sites:
  - hosts: ["*"]
    routes:
      - path: /api/
        validation: {{openapi: "{docs}/openapi.json"}}
        proxy: {{upstreams: ["http://127.0.0.1:8000"]}}
""",
    )
    out = bastion("check", "-c", str(config))
    assert out.returncode == 0, out.stderr
    assert "request validation" in out.stdout
    assert not (tmp_path / "data").exists()


def test_a_bad_local_openapi_file_is_reported_at_its_key(tmp_path: Path) -> None:
    (tmp_path / "spec.json").write_text('{"swagger": "2.0", "paths": {}}')
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    config = write(
        tmp_path,
        f"""\
sites:
  - hosts: ["*"]
    routes:
      - path: /ok/
        proxy: {{upstreams: ["http://127.0.0.1:8000"]}}
      - path: /api/
        validation: {{openapi: "{tmp_path / "spec.json"}"}}
        proxy: {{upstreams: ["http://127.0.0.1:8000"]}}
      - path: /empty/
        validation: {{openapi: "{tmp_path / "empty.yaml"}"}}
        proxy: {{upstreams: ["http://127.0.0.1:8000"]}}
""",
    )
    out = bastion("check", "-c", str(config))
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert "cannot prepare the certificates" not in out.stderr
    # both bad routes, each at its own line
    assert lines[0].startswith(f"{config}:9: sites[0].routes[1].validation.openapi: "), lines
    assert "not an OpenAPI 3.0 or 3.1 document" in lines[0]
    assert lines[1].startswith(f"{config}:12: sites[0].routes[2].validation.openapi: "), lines
    assert "not an OpenAPI document" in lines[1]
    # the gateway refuses to start with the same words
    run = subprocess.run(
        [sys.executable, "-m", "bastion", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1
    assert f"{config}:9: sites[0].routes[1].validation.openapi: " in run.stderr, run.stderr
