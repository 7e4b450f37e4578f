"""Config writers and start/stop for the backend and each proxy under test."""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from procs import Proc, free_port, start, wait_ready

SMALL_BODY = "hello, world\n"
BIG_SIZE = 16 * 1024


@dataclass
class Env:
    """What a target needs to start: a work dir, the backend address and the CPU set."""

    tmp: Path
    backend_port: int
    proxy_cpus: set[int] | None
    bastion_bin: str
    notes: list[str] = field(default_factory=list)
    load_cpus: set[int] | None = None  # where extra backends run (with the first one)


@dataclass
class Running:
    """A started target: the port wrk should hit and the process whose tree we measure."""

    name: str
    port: int
    proc: Proc | None  # None for "none" (wrk hits the backend directly)
    version: str = ""
    extra: list[Proc] = field(default_factory=list)  # more backends this target started

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        for proc in self.extra:
            proc.stop()


def _nginx_user_line() -> str:
    # As root the master hands workers to "nobody", which cannot use our 0700 temp dirs.
    if os.geteuid() != 0:
        return ""
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    return f"user {user} {group};"


def _nginx_common(prefix: Path) -> str:
    return f"""\
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
{_nginx_user_line()}
"""


def _nginx_http_common(prefix: Path) -> str:
    return f"""\
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 100000;
    keepalive_timeout 65s;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
"""


def _nginx_start(name: str, prefix: Path, conf: str, cpus: set[int] | None) -> Proc:
    prefix.mkdir(parents=True, exist_ok=True)
    conf_path = prefix / "nginx.conf"
    conf_path.write_text(conf)
    cmd = ["nginx", "-p", str(prefix), "-c", str(conf_path), "-e", str(prefix / "error.log")]
    return start(name, cmd, prefix / "stdout.log", cpus=cpus)


def start_backend(tmp: Path, cpus: set[int] | None) -> tuple[Proc, int]:
    """The fast origin: nginx, one process, GET / (13 bytes) and GET /16k (16 KiB)."""
    prefix = tmp / "backend"
    www = prefix / "www"
    www.mkdir(parents=True, exist_ok=True)
    (www / "16k").write_bytes(b"0123456789abcdef" * (BIG_SIZE // 16))
    port = free_port()
    body = SMALL_BODY.replace("\n", "\\n")
    conf = f"""{_nginx_common(prefix)}
master_process off;
worker_processes 1;
events {{ worker_connections 8192; multi_accept on; }}
http {{
{_nginx_http_common(prefix)}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = / {{ default_type text/plain; return 200 "{body}"; }}
        location = /16k {{ root {www}; default_type application/octet-stream; }}
    }}
}}
"""
    proc = _nginx_start("backend-nginx", prefix, conf, cpus)
    wait_ready(proc, port)
    wait_ready(proc, port, path="/16k")
    return proc, port


# --- proxies ------------------------------------------------------------------------------


def start_none(env: Env) -> Running:
    return Running("none", env.backend_port, None, "")


def start_nginx(env: Env) -> Running:
    prefix = env.tmp / "nginx-proxy"
    port = free_port()
    conf = f"""{_nginx_common(prefix)}
worker_processes 1;
events {{ worker_connections 8192; multi_accept on; }}
http {{
{_nginx_http_common(prefix)}
    upstream backend {{
        server 127.0.0.1:{env.backend_port};
        keepalive 64;
        keepalive_requests 100000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
    proc = _nginx_start("nginx-proxy", prefix, conf, env.proxy_cpus)
    return Running("nginx", port, proc, _version(["nginx", "-v"]))


def _bastion_yaml(port: int, backend_port: int, access_log: str) -> str:
    return f"""\
listen: {{http: 127.0.0.1:{port}}}
workers: 1
access_log: {access_log}
sites:
  - hosts: ["*"]
    routes:
      - path: /
        proxy: {{upstreams: ["http://127.0.0.1:{backend_port}"]}}
"""


def _start_bastion(env: Env, name: str, access_log: str) -> Running:
    workdir = env.tmp / name
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = workdir / "bastion.yaml"
    cfg.write_text(_bastion_yaml(port, env.backend_port, access_log))
    proc = start(name, [env.bastion_bin, "run", "-c", str(cfg)], workdir / "stdout.log",
                 cpus=env.proxy_cpus, cwd=workdir)
    return Running(name, port, proc, _bastion_version(env.bastion_bin))


def start_bastion(env: Env) -> Running:
    return _start_bastion(env, "bastion", '{format: "off"}')


def start_bastion_json(env: Env) -> Running:
    log_path = env.tmp / "bastion-json" / "access.log"
    return _start_bastion(env, "bastion-json", f'{{format: json, path: "{log_path}"}}')


def _start_bastion_pool(env: Env, name: str, policy: str) -> Running:
    """bastion with a 3-endpoint pool: the shared backend plus two more nginx backends
    (same content, same CPUs as the first), so the pool's cost is measured, not a
    backend's."""
    workdir = env.tmp / name
    workdir.mkdir(parents=True, exist_ok=True)
    extra: list[Proc] = []
    ports = [env.backend_port]
    for i in (1, 2):
        proc, backend_port = start_backend(workdir / f"backend{i}", env.load_cpus)
        extra.append(proc)
        ports.append(backend_port)
    port = free_port()
    upstreams = ", ".join(f'"http://127.0.0.1:{p}"' for p in ports)
    cfg = workdir / "bastion.yaml"
    cfg.write_text(f"""\
listen: {{http: 127.0.0.1:{port}}}
workers: 1
access_log: {{format: "off"}}
data_dir: {workdir / "data"}
sites:
  - hosts: ["*"]
    routes:
      - path: /
        proxy: {{upstreams: [{upstreams}], balance: {policy}}}
""")
    proc = start(name, [env.bastion_bin, "run", "-c", str(cfg)], workdir / "stdout.log",
                 cpus=env.proxy_cpus, cwd=workdir)
    return Running(name, port, proc, _bastion_version(env.bastion_bin), extra)


def start_bastion_pool_rr(env: Env) -> Running:
    return _start_bastion_pool(env, "bastion-pool-rr", "round_robin")


def start_bastion_pool_ewma(env: Env) -> Running:
    return _start_bastion_pool(env, "bastion-pool-ewma", "peak_ewma")


def start_floor(env: Env) -> Running:
    """The reference relay of bench/floor_proxy.py: uvloop + httptools and nothing else."""
    workdir = env.tmp / "floor"
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    script = Path(__file__).resolve().parent / "floor_proxy.py"
    proc = start("floor", [_bastion_python(env.bastion_bin), str(script), str(port),
                           str(env.backend_port)], workdir / "stdout.log",
                 cpus=env.proxy_cpus, cwd=workdir)
    return Running("floor", port, proc, "uvloop + httptools relay")


def _bastion_python(bastion_bin: str) -> str:
    """The interpreter bastion runs under (it has uvloop and httptools)."""
    near = Path(bastion_bin).parent / "python"
    return str(near) if near.exists() else sys.executable


def start_caddy(env: Env) -> Running:
    workdir = env.tmp / "caddy"
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "admin": {"disabled": True, "config": {"persist": False}},
        "logging": {"logs": {"default": {"level": "ERROR"}}},
        "storage": {"module": "file_system", "root": str(workdir / "data")},
        "apps": {
            "http": {
                "servers": {
                    "bench": {
                        "listen": [f"127.0.0.1:{port}"],
                        "automatic_https": {"disable": True},
                        "routes": [
                            {
                                "handle": [
                                    {
                                        "handler": "reverse_proxy",
                                        "upstreams": [{"dial": f"127.0.0.1:{env.backend_port}"}],
                                        "transport": {
                                            "protocol": "http",
                                            "keep_alive": {
                                                "enabled": True,
                                                "max_idle_conns_per_host": 64,
                                            },
                                        },
                                    }
                                ]
                            }
                        ],
                    }
                }
            }
        },
    }
    cfg = workdir / "caddy.json"
    cfg.write_text(json.dumps(config, indent=2))
    caddy_env = {
        "GOMAXPROCS": "1",
        "HOME": str(workdir),
        "XDG_DATA_HOME": str(workdir / "data"),
        "XDG_CONFIG_HOME": str(workdir / "config"),
    }
    proc = start("caddy", ["caddy", "run", "--config", str(cfg)], workdir / "stdout.log",
                 cpus=env.proxy_cpus, env=caddy_env, cwd=workdir)
    return Running("caddy", port, proc, _version(["caddy", "version"]))


def start_haproxy(env: Env) -> Running:
    workdir = env.tmp / "haproxy"
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = workdir / "haproxy.cfg"
    cfg.write_text(f"""\
global
    nbthread 1
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    http-reuse always

frontend fe
    bind 127.0.0.1:{port}
    default_backend be

backend be
    server origin 127.0.0.1:{env.backend_port}
""")
    proc = start("haproxy", ["haproxy", "-db", "-f", str(cfg)], workdir / "stdout.log",
                 cpus=env.proxy_cpus, cwd=workdir)
    return Running("haproxy", port, proc, _version(["haproxy", "-v"]))


@dataclass(frozen=True)
class Target:
    name: str
    binary: str  # "" when nothing beyond the backend is needed
    starter: Callable[[Env], Running]
    description: str


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("none", "", start_none, "wrk -> backend nginx directly (no proxy)"),
        Target("nginx", "nginx", start_nginx, "nginx reverse proxy, 1 worker, upstream keepalive"),
        Target("bastion", "bastion", start_bastion, "bastion, 1 worker, access log off"),
        Target("bastion-json", "bastion", start_bastion_json,
               "bastion, 1 worker, JSON access log to a file"),
        Target("bastion-pool-rr", "bastion", start_bastion_pool_rr,
               "bastion, 1 worker, 3-endpoint pool (3 nginx backends), round robin"),
        Target("bastion-pool-ewma", "bastion", start_bastion_pool_ewma,
               "bastion, 1 worker, 3-endpoint pool (3 nginx backends), peak-EWMA"),
        Target("floor", "", start_floor,
               "reference floor: a uvloop + httptools byte relay with no features"),
        Target("caddy", "caddy", start_caddy, "Caddy reverse_proxy, GOMAXPROCS=1"),
        Target("haproxy", "haproxy", start_haproxy, "HAProxy, nbthread 1, http-reuse always"),
    )
}


def missing_binary(target: Target, bastion_bin: str) -> str | None:
    """Name of the missing executable, or None when the target can run."""
    if not target.binary:
        return None
    if target.binary == "bastion":
        ok = os.access(bastion_bin, os.X_OK) or shutil.which(bastion_bin) is not None
        return None if ok else bastion_bin
    return None if shutil.which(target.binary) else target.binary


def default_bastion_bin() -> str:
    near = Path(sys.executable).parent / "bastion"
    if near.exists():
        return str(near)
    repo_venv = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "bastion"
    if repo_venv.exists():
        return str(repo_venv)
    return shutil.which("bastion") or str(near)


def _version(cmd: list[str]) -> str:
    import subprocess

    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].strip() if text else ""


def _bastion_version(bastion_bin: str) -> str:
    try:
        from importlib.metadata import version as pkg_version

        return f"bastion {pkg_version('bastion')}"
    except Exception:
        return "bastion"
