"""Shared fixtures: real backends on ephemeral ports and a real bastion process.

- `backend`: a threaded HTTP/1.1 server (stdlib) whose paths behave in known ways
  (echo, sized downloads, chunked, slow, garbage, dying mid-response) and which
  records every request it completes.
- `gateway`: a factory that writes a YAML config, starts `python -m bastion run`
  as a subprocess, waits until it accepts connections and stops it afterwards.
"""

from __future__ import annotations

import hashlib
import http.client
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml


def _port_slice() -> range:
    """This test process's own ports: below the kernel's ephemeral range (a port the kernel
    hands out for `bind(0)` is free again once closed, and a server another test starts on
    port 0 could get it while the gateway meant for it failed to bind), and a slice of its
    own per parallel test process, so that two processes never pick the same one."""
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    low, high = 20000, min(ephemeral_low, 32768)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]
    index = int(worker) if worker.isdigit() else 0
    count = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1), index + 1)
    size = (high - low) // count
    return range(low + index * size, low + (index + 1) * size)


_SLICE = _port_slice()
# handed out in turn from a random start, so a port comes back only after the whole slice
_NEXT_PORT = itertools.cycle(
    [*_SLICE[(start := random.randrange(len(_SLICE) or 1)) :], *_SLICE[:start]]
)


def free_port() -> int:
    """A port nothing listens on, for a gateway or server a test configures before it
    starts (see `_port_slice`)."""
    if len(_SLICE) >= 100:
        for _ in range(200):
            port = next(_NEXT_PORT)
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:  # no room below the ephemeral range: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_bastion(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m bastion ARGS`` as a user types it, with no terminal on stdin: ``env``
    replaces the environment, ``extra_env`` adds to this one."""
    environment = env if env is not None else {**os.environ, **(extra_env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bastion", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=environment,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port}")


# --------------------------------------------------------------------- backend
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _BackendServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _record(self, body_len: int, digest: str) -> dict[str, Any]:
        entry = {
            "method": self.command,
            "path": self.path,
            "headers": [(k.lower(), v) for k, v in self.headers.items()],
            "body_len": body_len,
            "sha256": digest,
        }
        with self.server.lock:
            self.server.requests.append(entry)
        return entry

    def _read_body(self) -> tuple[int, str]:
        digest = hashlib.sha256()
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            length = int(self.headers.get("Content-Length") or 0)
            return self._read_exact(length, digest), digest.hexdigest()
        total = 0
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return total, digest.hexdigest()
            total += self._read_exact(size, digest)
            self.rfile.readline()

    def _read_exact(self, remaining: int, digest: Any) -> int:
        total = 0
        while remaining:
            data = self.rfile.read(min(remaining, 1 << 20))
            if not data:
                raise ConnectionError("body cut short")
            digest.update(data)
            remaining -= len(data)
            total += len(data)
        return total

    def _send(
        self,
        status: int,
        body: bytes,
        ctype: str = "application/json",
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        body_len, digest = self._read_body()
        entry = self._record(body_len, digest)
        path = url.path
        if path.endswith("/bytes"):
            n = int(query.get("n", "0"))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            if self.command != "HEAD":
                _write_pattern(self.wfile, n)
        elif path.endswith("/chunked"):
            n = int(query.get("n", "0"))
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            block = b"x" * 65536
            left = n
            while left:
                part = block[: min(left, len(block))]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                left -= len(part)
            self.wfile.write(b"0\r\n\r\n")
        elif path.endswith("/slow"):
            time.sleep(float(query.get("s", "1")))
            self._send(200, b'{"slow": true}')
        elif path.endswith("/status"):
            code = int(query.get("code", "200"))
            self._send(code, b"" if code in (204, 304) else b'{"status": %d}' % code)
        elif path.endswith("/garbage"):
            self.wfile.write(b"this is not http\r\n\r\n")
            self.close_connection = True
        elif path.endswith("/die"):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"partial")
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif path.endswith("/die-before"):
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif path.endswith("/fields"):
            # names in the spellings backends use, for the response header rules
            self._send(
                200,
                b"ok",
                "text/plain",
                {
                    "ETag": '"v1"',
                    "x-debug-token": "abc",
                    "X-DEBUG-Trace": "def",
                    "X-Frame-Options": "SAMEORIGIN",
                    "X-Kept": "yes",
                },
            )
        elif path.endswith("/headers"):
            self._send(
                200,
                b"ok",
                "text/plain",
                {
                    "Connection": "close, X-Hop" if query.get("close") else "X-Hop",
                    "X-Hop": "secret-hop",
                    "Keep-Alive": "timeout=5",
                    "X-Backend": "yes",
                },
            )
        else:
            doc = dict(entry)
            self._send(200, json.dumps(doc).encode())

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _handle


def _write_pattern(wfile: Any, n: int) -> None:
    block = bytes(range(256)) * 4096  # 1 MiB
    left = n
    while left:
        part = block if left >= len(block) else block[:left]
        wfile.write(part)
        left -= len(part)


def pattern_digest(n: int) -> str:
    block = bytes(range(256)) * 4096
    digest = hashlib.sha256()
    left = n
    while left:
        part = block if left >= len(block) else block[:left]
        digest.update(part)
        left -= len(part)
    return digest.hexdigest()


class _BackendServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # uploads the gateway cuts on purpose end here; the tests assert on them

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []


class Backend:
    def __init__(self) -> None:
        self.server = _BackendServer(("127.0.0.1", 0))
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self.server.lock:
            return list(self.server.requests)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backend() -> Iterator[Backend]:
    b = Backend()
    yield b
    b.stop()


@pytest.fixture
def backend_factory() -> Iterator[Callable[[], Backend]]:
    made: list[Backend] = []

    def make() -> Backend:
        b = Backend()
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


# --------------------------------------------------------------------- gateway
class Gateway:
    def __init__(self, config_path: Path, port: int, workdir: Path) -> None:
        self.config_path = config_path
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.workdir = workdir
        self.stdout_path = workdir / "bastion.stdout"
        self.stderr_path = workdir / "bastion.stderr"
        self.proc: subprocess.Popen[bytes] | None = None

    def status_of(self, path: str) -> int:
        """The status of a GET of `path` on a connection of its own (body read)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    def start(self, wait: bool = True) -> Gateway:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bastion", "run", "-c", str(self.config_path)],
            stdout=self.stdout_path.open("wb"),
            stderr=self.stderr_path.open("wb"),
            cwd=self.workdir,
            env=env,
        )
        if wait:
            try:
                wait_for_port(self.port)
            except TimeoutError:
                self.stop()
                raise RuntimeError("bastion did not start:\n" + self.stderr) from None
            self._wait_listening()
        return self

    def _wait_listening(self) -> None:
        """The port answers; make sure bastion is the one listening there (it says so once
        every listener is open), not another test's server while bastion failed to bind."""
        assert self.proc is not None
        deadline = time.monotonic() + 10
        while "listening on" not in self.stderr and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("bastion did not start:\n" + self.stderr)
            time.sleep(0.01)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def write_config(self, config: dict[str, Any] | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.config_path)

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def reload(
        self,
        config: dict[str, Any] | str | None = None,
        wait_for: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        """Rewrite the config (optional), send SIGHUP, wait for the log line."""
        before = self.stderr.count(wait_for) if wait_for else 0
        if config is not None:
            self.write_config(config)
        self.send_signal(signal.SIGHUP)
        if wait_for:
            deadline = time.monotonic() + timeout
            while self.stderr.count(wait_for) <= before:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no {wait_for!r} in the log:\n{self.stderr}")
                time.sleep(0.02)

    def rss_kb(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


def simple_config(upstream: str, port: int, **extra: Any) -> dict[str, Any]:
    """One catch-all proxy route; `extra` merges top-level keys (limits, timeouts…)."""
    config: dict[str, Any] = {
        "listen": {"http": f"127.0.0.1:{port}"},
        "access_log": {"format": "off"},
        "sites": [{"hosts": ["*"], "routes": [{"path": "/", "proxy": {"upstreams": [upstream]}}]}],
    }
    config.update(extra)
    return config


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """`gateway(config_dict_or_yaml, port=None, start=True)` → a running Gateway.
    A dict config without `listen` gets one on a free port, and without `data_dir` one of
    its own."""
    started: list[Gateway] = []

    def make(config: dict[str, Any] | str, port: int | None = None, start: bool = True) -> Gateway:
        if isinstance(config, dict) and "listen" not in config:
            port = port or free_port()
            config = {"listen": {"http": f"127.0.0.1:{port}"}, **config}
        elif port is None and isinstance(config, dict):
            listen = config["listen"]["http"]
            first = listen[0] if isinstance(listen, list) else listen
            port = int(str(first).rsplit(":", 1)[1])
        assert port is not None, "give the port for a YAML text config"
        workdir = tmp_path / f"gw{len(started)}"
        workdir.mkdir()
        if isinstance(config, dict) and "data_dir" not in config:
            # not the machine's default data dir: no counters or keys shared between tests
            config = {**config, "data_dir": str(workdir / "data")}
        gw = Gateway(workdir / "bastion.yaml", port, workdir)
        gw.write_config(config)
        started.append(gw)
        if start:
            gw.start()
        return gw

    yield make
    for gw in started:
        gw.stop()


@pytest.fixture
def proxied(backend: Backend, gateway: Callable[..., Gateway]) -> Gateway:
    """A gateway proxying everything to `backend`."""
    port = free_port()
    return gateway(simple_config(backend.url, port))


def raw_request(port: int, data: bytes, timeout: float = 5.0, read_all: bool = True) -> bytes:
    """Send raw bytes, return everything the gateway answers until it closes
    (or until `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if not read_all:
                    break
        except TimeoutError:
            pass
        return b"".join(chunks)


# ------------------------------------------------------------------- protocol harness
@pytest.fixture(params=["h1", "h2"])
def client_protocol(request: pytest.FixtureRequest) -> str:
    """The protocol a shared behaviour test speaks: the test runs once over HTTP/1.1 and
    once over HTTP/2 (see tests/protocolkit.py, `Session`)."""
    return str(request.param)


@pytest.fixture
def in_process(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """`in_process(config_yaml_or_dict)` → an `InProcessGateway` (tests/protocolkit.py): the
    config's plan and protocols in this process, fed bytes through a fake transport; data
    dir under tmp_path; closed at the end of the test."""
    from protocolkit import InProcessGateway  # bastion is imported by tests that use it only

    made: list[InProcessGateway] = []

    def make(config: dict[str, Any] | str) -> InProcessGateway:
        gw = InProcessGateway(config, tmp_path / f"inproc{len(made)}")
        made.append(gw)
        return gw

    yield make
    for gw in made:
        gw.close()
