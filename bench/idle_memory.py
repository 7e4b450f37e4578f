"""Idle memory of one bastion worker: RSS, USS and PSS once it is up and has served a few
requests, for a few typical configurations, the median of several starts.

Configurations (each `workers: 1`, defaults otherwise, so statistics are on):

- `proxy`: quick mode, `bastion proxy --from ... --to ...` (combined access log to stdout)
- `plain`: `bastion run` with one plain-HTTP listener, one site, one proxy route
- `tls`: the same with an https listener too and the site's certificate from the local CA
- `nostats` (only when asked for): `plain` with statistics off
- `demo`: a config like `bastion demo`'s with everything on: HTTPS from the local CA,
  HTTP/2, admin API and dashboard, Prometheus metrics, an alert rule, a cache, a rate
  limit, API keys, compression, security headers

The starts of one configuration share a data dir (statistics, the local CA); those with
HTTPS are started once more before, unmeasured, so the figures are of a restart, not of
the first start that creates the local CA. Each start: the gateway is started as a
subprocess (`python -m bastion`, under the PYTHONPATH of this process), a handful of
requests go through it (plain and, where there is one, HTTPS over HTTP/1.1; with a
browser's User-Agent and Accept-Encoding), then after a settle time the worker's memory
is read from /proc/PID/status (VmRSS, Threads) and /proc/PID/smaps_rollup (Pss, and
USS = Private_Clean + Private_Dirty). One worker means one process: the figures are of
that process. RSS is the figure to compare; USS and PSS move with the other processes
that map the same files (another Python of the same venv lowers both).

Usage: python bench/idle_memory.py [--configs proxy,plain,tls,demo] [--starts 3]
       [--settle 3] [--python PATH] [--modules]
`--modules` also prints, per configuration, how many modules the worker has imported and
which of the heavy optional ones, from one more start under a wrapper (`PROBE`: a thread
that writes sys.modules to a file when asked) so that the probe's own thread and memory
are not in the figures.
"""

from __future__ import annotations

import argparse
import http.server
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from procs import free_port

CONFIGS = ("proxy", "plain", "tls", "demo")
# not measured by default: `plain` with statistics off, to show what they cost
EXTRA_CONFIGS = ("nostats",)
# started once before the measured starts, with the same data dir: the first start of a
# config with local-CA certificates creates the root and issues the leaves (cryptography),
# which a restart does not; the figures are of a restart
WARM_UP = ("tls", "demo")
# the optional libraries whose import is worth several hundred KiB or more; printed with
# --modules when the worker has them
HEAVY = (
    "cryptography",
    "h2",
    "hpack",
    "sqlite3",
    "prometheus_client",
    "brotli",
    "zstandard",
    "ua_parser",
    "jsonschema_rs",
    "jwt",
    "redis",
    "argon2",
    "concurrent.futures.thread",
    "email",
    "http.client",
)
# `python -m bastion ARGS` with a thread that lists sys.modules when asked (the only
# difference from a plain start)
PROBE = str(Path(__file__).with_name("probe_modules.py"))
BROWSER_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)


class _Backend(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b'{"message": "hello from the idle-memory backend"}\n' * 8
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def start_backend() -> int:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="backend", daemon=True).start()
    return int(server.server_address[1])


@dataclass
class Setup:
    argv: list[str]
    plain_port: int
    https_port: int | None
    ca_root: Path | None
    paths: list[str]


def _plain_yaml(port: int, backend: int, data_dir: Path) -> str:
    return f"""\
listen: {{http: 127.0.0.1:{port}}}
workers: 1
data_dir: "{data_dir}"
sites:
  - hosts: ["*"]
    routes:
      - path: /
        proxy: {{upstreams: ["http://127.0.0.1:{backend}"]}}
"""


def _tls_yaml(port: int, https: int, backend: int, data_dir: Path) -> str:
    return f"""\
listen: {{http: 127.0.0.1:{port}, https: 127.0.0.1:{https}}}
workers: 1
data_dir: "{data_dir}"
sites:
  - hosts: ["localhost"]
    tls: internal
    routes:
      - path: /
        proxy: {{upstreams: ["http://127.0.0.1:{backend}"]}}
"""


def _demo_yaml(port: int, https: int, backend: int, data_dir: Path) -> str:
    up = f'{{upstreams: ["http://127.0.0.1:{backend}"]}}'
    routes = f"""\
      - {{path: "= /api/time", proxy: {up}, cache: {{ttl: 10s}}}}
      - path: /api/limited/
        strip_prefix: true
        proxy: {up}
        rate_limits: [{{rate: 3/s, burst: 5}}]
      - {{path: /api/private/, strip_prefix: true, proxy: {up}, auth: {{api_keys: {{}}}}}}
      - {{path: /api/, proxy: {up}}}
      - {{path: "= /health", methods: [GET], respond: {{body: "ok\\n"}}}}
      - {{path: /old/, redirect: {{to: /api/, status: 308}}}}
      - {{path: /, respond: {{body: "guide"}}}}
"""
    return f"""\
listen: {{http: 127.0.0.1:{port}, https: 127.0.0.1:{https}}}
workers: 1
data_dir: "{data_dir}"
access_log: {{format: combined, path: "{data_dir / "access.log"}"}}
admin: {{listen: 127.0.0.1:{free_port()}, token: "idle-memory-admin-token-0123456789"}}
metrics: {{listen: 127.0.0.1:{free_port()}, consumers: 10}}
alerts:
  rules:
    errors: {{kind: error_rate, threshold: 10%, min_requests: 10, channels: []}}
sites:
  - hosts: ["localhost"]
    tls: internal
    hsts: true
    compress: true
    security_headers: true
    routes:
{routes}  - hosts: ["*"]
    tls: "off"
    compress: true
    routes:
{routes}"""


def setup(name: str, python: str, backend: int, tmp: Path, data_dir: Path) -> Setup:
    port = free_port()
    cfg = tmp / "bastion.yaml"
    run = [python, "-m", "bastion", "run", "-c", str(cfg)]
    if name == "proxy":
        argv = [
            python,
            "-m",
            "bastion",
            "proxy",
            "--from",
            f"127.0.0.1:{port}",
            "--to",
            f"http://127.0.0.1:{backend}",
        ]
        return Setup(argv, port, None, None, ["/"])
    if name in ("plain", "nostats"):
        text = _plain_yaml(port, backend, data_dir)
        if name == "nostats":
            text += "stats: {enabled: false}\n"
        cfg.write_text(text)
        return Setup(run, port, None, None, ["/"])
    https = free_port()
    ca_root = data_dir / "ca" / "root.crt"
    if name == "tls":
        cfg.write_text(_tls_yaml(port, https, backend, data_dir))
        return Setup(run, port, https, ca_root, ["/"])
    if name == "demo":
        cfg.write_text(_demo_yaml(port, https, backend, data_dir))
        return Setup(run, port, https, ca_root, ["/api/hello", "/api/time", "/health"])
    known = ", ".join(CONFIGS + EXTRA_CONFIGS)
    raise ValueError(f"unknown configuration {name!r}: one of {known}")


def _get(port: int, path: str, host: str, context: ssl.SSLContext | None) -> int:
    """One GET; the status code (0 when the connection failed)."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {BROWSER_UA}\r\n"
        "Accept-Encoding: gzip, br, zstd\r\nConnection: close\r\n\r\n"
    ).encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
            sock: socket.socket = raw
            if context is not None:
                sock = context.wrap_socket(raw, server_hostname=host)
            sock.sendall(request)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError:
        return 0
    parts = data.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def _wait_up(proc: subprocess.Popen[bytes], s: Setup, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bastion exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
        up = _get(s.plain_port, s.paths[0], "127.0.0.1", None)
        if up and (s.ca_root is None or s.ca_root.exists()):
            return
        time.sleep(0.1)
    raise RuntimeError(f"bastion did not answer in 30 s:\n{log.read_text()[-2000:]}")


def _serve_a_few(s: Setup) -> None:
    for _ in range(3):
        for path in s.paths:
            _get(s.plain_port, path, "127.0.0.1", None)
    if s.https_port is not None and s.ca_root is not None:
        context = ssl.create_default_context(cafile=str(s.ca_root))
        context.set_alpn_protocols(["http/1.1"])
        for _ in range(3):
            for path in s.paths:
                _get(s.https_port, path, "localhost", context)


def read_memory(pid: int) -> dict[str, float]:
    """VmRSS, USS and PSS in MiB, and the number of threads."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            out["rss"] = int(line.split()[1]) / 1024
        elif line.startswith("Threads:"):
            out["threads"] = int(line.split()[1])
    private = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key == "Pss":
            out["pss"] = int(rest.split()[0]) / 1024
        elif key in ("Private_Clean", "Private_Dirty"):
            private += int(rest.split()[0])
    out["uss"] = private / 1024
    return out


def read_modules(dump: Path) -> list[str]:
    """The worker's imported modules, through the `PROBE` wrapper."""
    Path(str(dump) + ".want").touch()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if dump.exists():
            return dump.read_text().split()
        time.sleep(0.05)
    return []


def measure_once(
    name: str, python: str, backend: int, settle: float, modules: bool, data_dir: Path
) -> tuple[dict[str, float], list[str]]:
    with tempfile.TemporaryDirectory(prefix=f"idle-{name}-") as tmp_name:
        tmp = Path(tmp_name)
        s = setup(name, python, backend, tmp, data_dir)
        log = tmp / "bastion.log"
        dump = tmp / "modules.txt"
        env = dict(os.environ)
        argv = s.argv
        if modules:
            env["BASTION_PROBE_MODULES"] = str(dump)
            argv = [argv[0], PROBE, *argv[3:]]  # in place of "-m bastion"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        try:
            _wait_up(proc, s, log)
            _serve_a_few(s)
            time.sleep(settle)
            memory = read_memory(proc.pid)
            names = read_modules(dump) if modules else []
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return memory, names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--starts", type=int, default=3)
    p.add_argument("--settle", type=float, default=3.0, help="seconds idle before reading")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--modules", action="store_true", help="also list heavy imported modules")
    args = p.parse_args(argv)
    backend = start_backend()
    print(
        f"{'config':8} {'RSS MiB':>8} {'USS MiB':>8} {'PSS MiB':>8} {'threads':>7}   "
        f"(median of {args.starts} starts; RSS of each start)"
    )
    for name in args.configs.split(","):
        with tempfile.TemporaryDirectory(prefix=f"idle-{name}-data-") as data_name:
            data_dir = Path(data_name)
            if name in WARM_UP:
                measure_once(name, args.python, backend, 0.0, False, data_dir)
            runs = [
                measure_once(name, args.python, backend, args.settle, False, data_dir)
                for _ in range(args.starts)
            ]
            names = (
                measure_once(name, args.python, backend, 0.5, True, data_dir)[1]
                if args.modules
                else []
            )
        med = {
            key: statistics.median(r[0][key] for r in runs)
            for key in ("rss", "uss", "pss", "threads")
        }
        each = ", ".join(f"{r[0]['rss']:.1f}" for r in runs)
        print(
            f"{name:8} {med['rss']:8.1f} {med['uss']:8.1f} {med['pss']:8.1f} "
            f"{med['threads']:7.0f}   ({each})",
            flush=True,
        )
        if args.modules:
            heavy = [m for m in HEAVY if m in names]
            print(f"         {len(names)} modules; heavy: {', '.join(heavy) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
