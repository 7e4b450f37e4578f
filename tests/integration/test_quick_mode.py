"""`bastion proxy` (quick mode) as a user runs it: a subprocess of `python -m bastion proxy`
in front of real backends on loopback: HTTPS for localhost from the local CA (verified
against the data dir's root), the redirect from plain HTTP, several upstreams balanced, a
Unix-socket upstream, a certificate from a real Pebble, and the errors of bad flags."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Backend, _Handler, free_port
from pebble_support import (  # noqa: F401 (pebble_fixture is a fixture)
    Pebble,
    https_get,
    pebble_fixture,
    save_root,
)


class QuickProxy:
    """A running `bastion proxy`, with its own data dir."""

    def __init__(self, args: list[str], workdir: Path) -> None:
        self.workdir = workdir
        self.data = workdir / "data"
        self.err_path = workdir / "stderr"
        self.out_path = workdir / "stdout"
        env = dict(os.environ, PYTHONUNBUFFERED="1", BASTION_DATA_DIR=str(self.data))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bastion", "proxy", *args],
            stdout=self.out_path.open("wb"),
            stderr=self.err_path.open("wb"),
            cwd=workdir,
            env=env,
        )

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_for(self, text: str, count: int = 1, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.stderr.count(text) < count:
            if self.proc.poll() is not None:
                raise AssertionError(f"bastion proxy exited:\n{self.stderr}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in the log:\n{self.stderr}")
            time.sleep(0.02)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def quick(tmp_path: Path) -> Iterator[Callable[..., QuickProxy]]:
    """`quick(*args, listeners=1)` → a `bastion proxy` listening on its `listeners`."""
    started: list[QuickProxy] = []

    def start(*args: str, listeners: int = 1) -> QuickProxy:
        workdir = tmp_path / f"quick{len(started)}"
        workdir.mkdir()
        proxy = QuickProxy(list(args), workdir)
        started.append(proxy)
        proxy.wait_for("listening on", count=listeners)
        return proxy

    yield start
    for proxy in started:
        assert proxy.stop() == 0, proxy.stderr
        assert "Traceback" not in proxy.stderr, proxy.stderr


def run_proxy(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`bastion proxy` expected to exit on its own (bad flags)."""
    return subprocess.run(
        [sys.executable, "-m", "bastion", "proxy", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
        env=dict(os.environ, BASTION_DATA_DIR=str(cwd / "data")),
    )


def test_localhost_https_from_the_local_ca_and_http_redirected(
    backend: Backend, quick: Callable[..., QuickProxy]
) -> None:
    https, http = free_port(), free_port()
    proxy = quick(
        "--from", f"https://localhost:{https}", "--http-port", str(http),
        "--to", f"127.0.0.1:{backend.port}",
        listeners=2,
    )  # fmt: skip
    root = proxy.data / "ca" / "root.crt"
    assert str(root) in proxy.stderr  # it says where the root to trust is
    context = ssl.create_default_context(cafile=str(root))
    with httpx.Client(verify=context) as client:
        response = client.get(f"https://localhost:{https}/hello?x=1")
    assert response.status_code == 200
    assert backend.requests[-1]["path"] == "/hello?x=1"
    # a client that does not trust the local CA is refused the handshake
    with pytest.raises(httpx.ConnectError), httpx.Client() as client:
        client.get(f"https://localhost:{https}/hello")
    # plain HTTP answers with a redirect to the HTTPS port
    response = httpx.get(f"http://127.0.0.1:{http}/hello?x=1", headers={"Host": "localhost"})
    assert response.status_code in (301, 308)
    assert response.headers["location"] == f"https://localhost:{https}/hello?x=1"
    # the access log (combined, on stdout) has the request
    proxy.stop()
    assert '"GET /hello?x=1 HTTP/1.1" 200' in proxy.out_path.read_text()


def test_several_upstreams_share_the_requests(
    backend_factory: Callable[[], Backend], quick: Callable[..., QuickProxy]
) -> None:
    first, second = backend_factory(), backend_factory()
    port = free_port()
    quick("--from", f"127.0.0.1:{port}", "--to", f":{first.port}", "--to", second.url)
    with httpx.Client() as client:
        for i in range(10):
            assert client.get(f"http://127.0.0.1:{port}/lb/{i}").status_code == 200
    assert first.requests and second.requests
    assert len(first.requests) + len(second.requests) == 10


class _UnixBackend(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """conftest's backend handler on a Unix socket."""

    daemon_threads = True

    def __init__(self, path: str) -> None:
        super().__init__(path, _Handler)
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []


def test_unix_socket_upstream(tmp_path: Path, quick: Callable[..., QuickProxy]) -> None:
    path = str(tmp_path / "app.sock")
    server = _UnixBackend(path)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = free_port()
        quick("--from", f":{port}", "--to", f"unix:{path}", "--access-log", "off")
        response = httpx.get(f"http://127.0.0.1:{port}/over/unix")
        assert response.status_code == 200
        assert [r["path"] for r in server.requests] == ["/over/unix"]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--to", "ftp://x"],
            "--to 'ftp://x': expected :PORT, HOST:PORT, http(s)://HOST[:PORT] or unix:/PATH",
        ),
        (["--from", "8080", "--to", ":1"], "for every interface write ':8080'"),
        (["--from", "https://:8443", "--to", ":1"], "HTTPS needs a name to certify"),
        (["--from", ":8080", "--http-port", "8081", "--to", ":1"], "--http-port applies"),
        (
            ["--from", "api.example.com", "--to", ":1", "--email", "not-an-email"],
            "--email: expected an email address",
        ),
        (["--from", "*.example.com", "--to", ":1"], "add --internal-certs"),
    ],
)
def test_bad_forms_exit_2_naming_what_was_expected(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = run_proxy(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_help_says_what_it_does_with_examples(tmp_path: Path) -> None:
    result = run_proxy("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "caddy reverse-proxy" in result.stdout
    assert "examples:" in result.stdout
    assert "bastion proxy --from localhost --to :8000" in result.stdout


def _without_bind_capability() -> list[str]:
    """A command prefix that runs a program without the capability to bind low ports:
    nothing for an ordinary user, setpriv dropping it for root."""
    if os.geteuid() != 0:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", 443))
            except OSError:
                return []
        pytest.skip("this user may bind port 443 here")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to drop root's capability")
    return [setpriv, "--bounding-set", "-net_bind_service", "--inh-caps", "-net_bind_service"]


def test_privileged_port_refused_says_what_to_do(tmp_path: Path) -> None:
    """Without the capability, HTTPS on 443 cannot start: the message says how to get it."""
    prefix = _without_bind_capability()
    result = subprocess.run(
        [*prefix, sys.executable, "-m", "bastion", "proxy", "--from", "localhost", "--to", ":1"],
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ, BASTION_DATA_DIR=str(tmp_path / "data")),
    )
    assert result.returncode == 1
    assert "cannot listen on port 80:" in result.stderr  # :80 comes with :443
    for advice in ("sudo", "cap_net_bind_service", "--from https://localhost:8443"):
        assert advice in result.stderr
    assert "Traceback" not in result.stderr


def test_certificate_from_pebble_over_acme(
    tmp_path: Path,
    backend: Backend,
    pebble: Callable[..., Pebble],
    quick: Callable[..., QuickProxy],
) -> None:
    """A name a private ACME CA certifies (`.test` with a directory that is not Let's
    Encrypt's): HTTP-01 answered on --http-port, where Pebble validates."""
    http, https = free_port(), free_port()
    ca = pebble(http)
    proxy = quick(
        "--from", f"https://bastion.test:{https}", "--http-port", str(http),
        "--to", backend.url,
        "--acme-directory", ca.directory, "--acme-ca-root", str(ca.minica),
        "--email", "ops@example.test",
        listeners=2,
    )  # fmt: skip
    assert "from " + ca.directory in proxy.stderr
    proxy.wait_for("acme: serving the certificate for bastion.test", timeout=60)
    response = https_get(https, "bastion.test", save_root(ca, tmp_path))
    assert response.startswith(b"HTTP/1.1 200"), response[:300]
    assert backend.requests[-1]["path"] == "/hello"
    assert ca.new_orders() >= 1
