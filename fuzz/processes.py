"""The processes the fuzzers drive: a recording backend and a bastion with the fuzzers'
routes, its API key and its log."""

from __future__ import annotations

import json
import os
import re
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

UPSTREAM_TOKEN = "fuzz-upstream-token-7f3a"
_ID_IN_TARGET = re.compile(rb"fz=([0-9a-f]{12})")


# ------------------------------------------------------------------ backend
@dataclass
class Seen:
    """One request as the backend received it."""

    raw_head: bytes
    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    trailers: list[tuple[bytes, bytes]]
    body_len: int
    ids: list[str]
    error: str = ""

    def values(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n.lower() == name]


class _BackendHandler(socketserver.StreamRequestHandler):
    server: _BackendServer
    timeout = 30

    def handle(self) -> None:
        try:
            while self._one():
                pass
        except (OSError, ValueError):
            pass

    def _line(self) -> bytes:
        line = self.rfile.readline(1 << 20)
        if line and not line.endswith(b"\n"):
            raise ValueError("line too long or cut")
        return line

    def _one(self) -> bool:
        line = self._line()
        while line in (b"\r\n", b"\n"):
            line = self._line()
        if not line:
            return False
        head = [line]
        while True:
            more = self._line()
            if not more:
                self._record(head, b"", b"", b"", [], [], 0, "head cut short")
                return False
            head.append(more)
            if more in (b"\r\n", b"\n"):
                break
        parts = line.rstrip(b"\r\n").split(b" ")
        error = "" if len(parts) == 3 else "request line is not METHOD SP TARGET SP VERSION"
        method, target, version = ([*parts, b"", b"", b""])[:3] if not error else (b"", b"", b"")
        if error:
            method = parts[0]
            target = b" ".join(parts[1:-1])
            version = parts[-1]
        headers: list[tuple[bytes, bytes]] = []
        for raw in head[1:-1]:
            name, sep, value = raw.rstrip(b"\r\n").partition(b":")
            if not sep:
                error = error or "header line without a colon"
            headers.append((name, value.strip(b" \t")))
        lower = {n.lower() for n, _ in headers}
        te = b",".join(v for n, v in headers if n.lower() == b"transfer-encoding").lower()
        trailers: list[tuple[bytes, bytes]] = []
        body_len = 0
        if b"chunked" in te:
            body_len, trailers = self._chunked()
        elif b"content-length" in lower:
            lengths = {v for n, v in headers if n.lower() == b"content-length"}
            if len(lengths) != 1 or not next(iter(lengths)).isdigit():
                error = error or "bad Content-Length"
            else:
                body_len = int(next(iter(lengths)))
                if body_len > 1 << 26:
                    error = error or "huge Content-Length"
                else:
                    self._exact(body_len)
        ids = self._record(head, method, target, version, headers, trailers, body_len, error)
        echo = ",".join(ids) or "-"
        doc = {
            "fz": echo,
            "method": method.decode("latin-1"),
            "target": target.decode("latin-1"),
            "body_len": body_len,
        }
        body = json.dumps(doc).encode()
        status = b"400 Bad Request" if error else b"200 OK"
        out = [
            b"HTTP/1.1 " + status,
            b"Content-Type: application/json",
            b"Content-Length: %d" % len(body),
            b"X-Fuzz-Echo: " + echo.encode(),
            b"Cache-Control: public, max-age=60",
        ]
        if error:
            out.append(b"Connection: close")
        data = b"\r\n".join(out) + b"\r\n\r\n"
        if method != b"HEAD":
            data += body
        self.wfile.write(data)
        self.wfile.flush()
        return not error

    def _exact(self, n: int) -> None:
        while n:
            got = self.rfile.read(min(n, 1 << 16))
            if not got:
                raise ValueError("body cut short")
            n -= len(got)

    def _chunked(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        total = 0
        while True:
            size_line = self._line()
            size = int(size_line.split(b";")[0].strip() or b"x", 16)
            if size == 0:
                break
            self._exact(size)
            total += size
            self._line()
        trailers: list[tuple[bytes, bytes]] = []
        while True:
            line = self._line()
            if line in (b"\r\n", b"\n", b""):
                return total, trailers
            name, _, value = line.rstrip(b"\r\n").partition(b":")
            trailers.append((name, value.strip()))

    def _record(
        self,
        head: list[bytes],
        method: bytes,
        target: bytes,
        version: bytes,
        headers: list[tuple[bytes, bytes]],
        trailers: list[tuple[bytes, bytes]],
        body_len: int,
        error: str,
    ) -> list[str]:
        ids = [m.decode() for m in _ID_IN_TARGET.findall(target)]
        for name, value in headers:
            if name.lower() == b"x-fuzz-id":
                ids.extend(v.strip().decode("latin-1") for v in value.split(b","))
        ids = list(dict.fromkeys(i for i in ids if i))
        seen = Seen(
            b"".join(head), method, target, version, headers, trailers, body_len, ids, error
        )
        with self.server.lock:
            self.server.seen.append(seen)
        return ids


class _BackendServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _BackendHandler)
        self.lock = threading.Lock()
        self.seen: list[Seen] = []

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class RecordingBackend:
    def __init__(self) -> None:
        self.server = _BackendServer()
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self._read = 0

    def take_new(self) -> list[Seen]:
        with self.server.lock:
            new = self.server.seen[self._read :]
            self._read = len(self.server.seen)
        return new

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------ bastion
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _route(name: str, upstream: str, **extra: Any) -> dict[str, Any]:
    return {
        "path": f"/{name}/" if name != "other" else "/",
        "proxy": {"upstreams": [upstream], "timeouts": {"read": "5s", "connect": "2s"}},
        "headers": {"response": {"set": {"X-Fuzz-Route": name}}},
        **extra,
    }


class Bastion:
    """A bastion process with the fuzzers' routes, its API key and its log."""

    def __init__(self, backend_port: int, https: bool) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bastion-fuzz-"))
        self.port = free_port()
        self.tls_port = free_port() if https else 0
        self.data = self.dir / "data"
        self.key = self._create_key()
        upstream = f"http://127.0.0.1:{backend_port}"
        hdr = _route("hdr", upstream)
        hdr["headers"]["request"] = {
            "remove": ["X-Remove-Me"],
            "set": {"X-Set-By-Gateway": "1"},
            "inject": {"X-Upstream-Token": "${FUZZ_UPSTREAM_TOKEN}"},
        }
        listen: dict[str, str] = {"http": f"127.0.0.1:{self.port}"}
        if https:
            listen["https"] = f"127.0.0.1:{self.tls_port}"
        self.config: dict[str, Any] = {
            "listen": listen,
            "data_dir": str(self.data),
            "access_log": {"format": "off"},
            "sites": [
                {
                    "hosts": ["localhost", "*"] if https else ["*"],
                    "routes": [
                        _route("public", upstream),
                        _route("admin", upstream, auth={"api_keys": {"query": "api_key"}}),
                        _route("cached", upstream, cache={"ttl": "60s"}),
                        _route("limited", upstream, rate_limits=[{"rate": "50/s"}]),
                        hdr,
                        _route("other", upstream),
                    ],
                }
            ],
        }
        self.config_path = self.dir / "bastion.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.stderr_path = self.dir / "bastion.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_read = 0

    def _create_key(self) -> str:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bastion",
                "keys",
                "create",
                "--consumer",
                "alice",
                "--data-dir",
                str(self.data),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if k != "BASTION_DATA_DIR"},
        )
        if done.returncode != 0:
            raise SystemExit("bastion keys create failed:\n" + done.stderr)
        return done.stdout.strip()

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", FUZZ_UPSTREAM_TOKEN=UPSTREAM_TOKEN)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bastion", "run", "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=self.stderr_path.open("wb"),
            cwd=self.dir,
            env=env,
        )
        for port in (self.port, self.tls_port):
            if port:
                self._wait(port)

    def _wait(self, port: int) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("bastion did not start:\n" + self.stderr_path.read_text("latin-1"))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def new_log(self) -> str:
        """The stderr text written since the last call."""
        try:
            size = self.stderr_path.stat().st_size
        except OSError:
            return ""
        if size <= self._log_read:
            return ""
        with self.stderr_path.open("rb") as f:
            f.seek(self._log_read)
            data = f.read(size - self._log_read)
        self._log_read = size
        return data.decode("latin-1")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")


def bad_log_lines(text: str) -> list[str]:
    """The ERROR/CRITICAL lines of a log, each traceback reduced to its exception line."""
    out = []
    for line in text.splitlines():
        if " ERROR " in line or " CRITICAL " in line:
            out.append(line)
        elif _EXCEPTION_LINE.match(line):
            out.append("  traceback: " + line)
    if "Traceback" in text and not any(ln.startswith("  traceback") for ln in out):
        out.append("  traceback (no exception line found)")
    return out
