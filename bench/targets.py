"""Config writers and start/stop for the backend and each proxy under test."""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import sys
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

import tlscert
from procs import Proc, free_port, start, wait_ready
from tlscert import TlsFiles

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
    tls: TlsFiles | None = None  # set when an HTTPS scenario is selected
    load_cpus: set[int] | None = None  # where extra backends run (with the first one)
    # the request headers of the policy scenario (the API key bastion-policy created)
    policy_headers: tuple[str, ...] = ()


@dataclass
class Running:
    """A started target: the port wrk should hit and the process whose tree we measure."""

    name: str
    port: int
    proc: Proc | None  # None for "none" (wrk hits the backend directly)
    version: str = ""
    # by keyword only: a list of backends passed where `tls` stood made a plain target
    # look like an HTTPS one (its readiness probe then spoke TLS to it)
    _: KW_ONLY
    tls: bool = False  # listens with HTTPS (and h2 where the server has it) on ``port``
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
    keepalive_requests {STREAMS_PER_CONNECTION};
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
        # what a proxy without a cache configured forwards in the cache-hit scenario
        location = /cached/ {{ default_type text/plain; return 200 "{body}"; }}
        location = /api/ {{ default_type text/plain; return 200 "{body}"; }}
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


def _nginx_proxy_head(prefix: Path, env: Env) -> str:
    """Worker, events and the keep-alive upstream block shared by the nginx proxy targets
    (the `http {` block stays open for the target's own server)."""
    return f"""worker_processes 1;
events {{ worker_connections 8192; multi_accept on; }}
http {{
{_nginx_http_common(prefix)}
    upstream backend {{
        server 127.0.0.1:{env.backend_port};
        keepalive 64;
        keepalive_requests 100000;
    }}"""


def start_nginx(env: Env) -> Running:
    prefix = env.tmp / "nginx-proxy"
    port = free_port()
    conf = f"""{_nginx_common(prefix)}
{_nginx_proxy_head(prefix, env)}
    proxy_cache_path {prefix}/cache keys_zone=bench:10m max_size=256m inactive=1h;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location /cached/ {{  # the cache-hit scenario: served from proxy_cache
            proxy_pass http://backend/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
            proxy_cache_valid 200 1h;
            add_header X-Cache $upstream_cache_status;
        }}
    }}
}}
"""
    proc = _nginx_start("nginx-proxy", prefix, conf, env.proxy_cpus)
    return Running("nginx", port, proc, _version(["nginx", "-v"]))


# Every observability feature off: the bare proxy. Statistics and trace context are on by
# default, so "bastion" says so; "bastion-observe" turns everything on (see _observe_yaml).
OBSERVE_OFF = "stats: {enabled: false}\ntracing: {traceparent: false}\n"


def _observe_yaml(workdir: Path) -> str:
    """Every observability feature on: metrics and admin listeners, statistics, trace
    context, and an alert rule (its webhook points at a closed port: it never fires here)."""
    token = workdir / "admin-token"
    token.write_text("bench-admin-token-0123456789")
    return f"""\
data_dir: "{workdir / 'data'}"
metrics: {{listen: 127.0.0.1:{free_port()}}}
admin: {{listen: 127.0.0.1:{free_port()}, token: "${{file:{token}}}"}}
stats: {{enabled: true}}
tracing: {{traceparent: true}}
alerts:
  channels: {{hook: {{webhook: {{url: "http://127.0.0.1:{free_port()}/hook"}}}}}}
  rules: {{errors: {{kind: error_rate, threshold: 5%}}}}
"""


# Streams served on one HTTP/2 connection before a graceful GOAWAY: the same cap for nginx
# (`keepalive_requests`, which nginx applies to HTTP/2 streams) and bastion
# (`http2.max_requests`), set high enough that no h2 run reaches it
STREAMS_PER_CONNECTION = 100000
H2_STREAM_CAP = f"http2: {{max_requests: {STREAMS_PER_CONNECTION}}}\n"


def _bastion_yaml(port: int, backend_port: int, access_log: str,
                  tls: TlsFiles | None = None, observe: str = OBSERVE_OFF) -> str:
    listen = f"{{http: 127.0.0.1:{port}}}"
    site_tls = ""
    if tls is not None:
        # without an explicit plain listener bastion would also open its default :8080
        listen = f"{{http: 127.0.0.1:{free_port()}, https: 127.0.0.1:{port}}}"
        site_tls = f"    tls: {{cert: \"{tls.cert}\", key: \"{tls.key}\"}}\n"
    return f"""\
listen: {listen}
{H2_STREAM_CAP}workers: 1
access_log: {access_log}
{observe}sites:
  - hosts: ["*"]
{site_tls}    routes:
      - path: /cached/                 # the cache-hit scenario
        strip_prefix: true
        proxy: {{upstreams: ["http://127.0.0.1:{backend_port}"]}}
        cache: {{ttl: 1h}}
      - path: /
        proxy: {{upstreams: ["http://127.0.0.1:{backend_port}"]}}
"""


def _start_bastion(env: Env, name: str, access_log: str, observe: bool = False) -> Running:
    workdir = env.tmp / name
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = workdir / "bastion.yaml"
    features = _observe_yaml(workdir) if observe else OBSERVE_OFF
    cfg.write_text(_bastion_yaml(port, env.backend_port, access_log, observe=features))
    proc = start(name, [env.bastion_bin, "run", "-c", str(cfg)], workdir / "stdout.log",
                 cpus=env.proxy_cpus, cwd=workdir)
    return Running(name, port, proc, _bastion_version(env.bastion_bin))


def start_bastion(env: Env) -> Running:
    return _start_bastion(env, "bastion", '{format: "off"}')


def start_bastion_observe(env: Env) -> Running:
    """The bare proxy with every observability feature on (the observe scenario)."""
    return _start_bastion(env, "bastion-observe", '{format: "off"}', observe=True)


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
    return Running(name, port, proc, _bastion_version(env.bastion_bin), extra=extra)


def start_bastion_pool_rr(env: Env) -> Running:
    return _start_bastion_pool(env, "bastion-pool-rr", "round_robin")


def start_bastion_pool_ewma(env: Env) -> Running:
    return _start_bastion_pool(env, "bastion-pool-ewma", "peak_ewma")
POLICY_PATH = "/api/"


def _bastion_policy_yaml(port: int, backend_port: int, data_dir: Path, log_path: Path) -> str:
    """An API route with an API key, a rate limit (never reached, but counted), header rules
    and a JSON access log; ``/`` stays bare for the readiness probe."""
    upstream = f"http://127.0.0.1:{backend_port}"
    return f"""\
listen: {{http: 127.0.0.1:{port}}}
workers: 1
data_dir: "{data_dir}"
access_log: {{format: json, path: "{log_path}"}}
sites:
  - hosts: ["*"]
    routes:
      - path: "= {POLICY_PATH}"
        proxy: {{upstreams: ["{upstream}"]}}
        auth: {{api_keys: {{}}}}
        rate_limits:
          - {{rate: 1000000/s, key: consumer}}
        headers:
          request:
            set: {{X-Client-IP: "{{client_ip}}"}}
            remove: [Cookie]
          response:
            set: {{X-Served-By: bastion}}
            remove: [X-Powered-By]
      - path: /
        proxy: {{upstreams: ["{upstream}"]}}
"""


def start_bastion_policy(env: Env) -> Running:
    """bastion with the policies of a public API on the route (the policy scenario)."""
    import subprocess

    workdir = env.tmp / "bastion-policy"
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = workdir / "bastion.yaml"
    log_path = workdir / "access.log"
    cfg.write_text(_bastion_policy_yaml(port, env.backend_port, workdir / "data", log_path))
    made = subprocess.run(
        [env.bastion_bin, "keys", "create", "--consumer", "bench", "-c", str(cfg)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    if made.returncode != 0 or not made.stdout.strip():
        raise OSError(f"bastion keys create failed: {made.stderr.strip()[:200]}")
    env.policy_headers = (f"X-API-Key: {made.stdout.split()[0]}",)
    proc = start("bastion-policy", [env.bastion_bin, "run", "-c", str(cfg)],
                 workdir / "stdout.log", cpus=env.proxy_cpus, cwd=workdir)
    return Running("bastion-policy", port, proc, _bastion_version(env.bastion_bin))


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


def _caddy_config(workdir: Path, port: int, backend_port: int) -> dict[str, Any]:
    return {
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
                                        "upstreams": [{"dial": f"127.0.0.1:{backend_port}"}],
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


def _caddy_start(env: Env, workdir: Path, config: dict[str, Any], name: str,
                 tls: bool = False) -> Running:
    port = int(config["apps"]["http"]["servers"]["bench"]["listen"][0].rsplit(":", 1)[1])
    cfg = workdir / "caddy.json"
    cfg.write_text(json.dumps(config, indent=2))
    caddy_env = {
        "GOMAXPROCS": "1",
        "HOME": str(workdir),
        "XDG_DATA_HOME": str(workdir / "data"),
        "XDG_CONFIG_HOME": str(workdir / "config"),
    }
    proc = start(name, ["caddy", "run", "--config", str(cfg)], workdir / "stdout.log",
                 cpus=env.proxy_cpus, env=caddy_env, cwd=workdir)
    return Running("caddy", port, proc, _version(["caddy", "version"]), tls=tls)


def start_caddy(env: Env) -> Running:
    workdir = env.tmp / "caddy"
    workdir.mkdir(parents=True, exist_ok=True)
    return _caddy_start(env, workdir, _caddy_config(workdir, free_port(), env.backend_port),
                        "caddy")


def _haproxy_start(env: Env, workdir: Path, port: int, bind: str, global_extra: str,
                   name: str, tls: bool = False) -> Running:
    cfg = workdir / "haproxy.cfg"
    cfg.write_text(f"""\
global
    nbthread 1
    maxconn 4096
    {global_extra}

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    http-reuse always

frontend fe
    {bind}
    default_backend be

backend be
    server origin 127.0.0.1:{env.backend_port}
""")
    proc = start(name, ["haproxy", "-db", "-f", str(cfg)], workdir / "stdout.log",
                 cpus=env.proxy_cpus, cwd=workdir)
    return Running("haproxy", port, proc, _version(["haproxy", "-v"]), tls=tls)


def start_haproxy(env: Env) -> Running:
    workdir = env.tmp / "haproxy"
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    return _haproxy_start(env, workdir, port, f"bind 127.0.0.1:{port}", "", "haproxy")


# --- HTTPS instances ---------------------------------------------------------------------
# The HTTPS scenarios run separate instances of the same proxies (bastion redirects plain
# HTTP for a site with TLS, so one instance cannot serve both kinds of scenario). All: the
# run's ECDSA P-256 certificate, TLS 1.3 only, X25519, no session resumption (no tickets, no
# session cache), HTTP/2 offered by ALPN where the server has it, the same plain-HTTP backend.


def _tls(env: Env) -> TlsFiles:
    if env.tls is None:
        raise RuntimeError("HTTPS instance started without the run's certificate")
    return env.tls


def start_nginx_tls(env: Env) -> Running:
    tls = _tls(env)
    prefix = env.tmp / "nginx-tls"
    port = free_port()
    conf = f"""{_nginx_common(prefix)}
{_nginx_proxy_head(prefix, env)}
    server {{
        listen 127.0.0.1:{port} ssl http2 backlog=4096;
        ssl_certificate {tls.cert};
        ssl_certificate_key {tls.key};
        ssl_protocols TLSv1.3;
        ssl_ecdh_curve X25519;
        ssl_conf_command Ciphersuites {tlscert.TLS13_SUITE};
        ssl_session_tickets off;
        ssl_session_cache off;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
    proc = _nginx_start("nginx-tls", prefix, conf, env.proxy_cpus)
    return Running("nginx", port, proc, _version(["nginx", "-v"]), tls=True)


def start_bastion_tls(env: Env) -> Running:
    tls = _tls(env)
    workdir = env.tmp / "bastion-tls"
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = workdir / "bastion.yaml"
    text = _bastion_yaml(port, env.backend_port, '{format: "off"}', tls)
    cfg.write_text(f"data_dir: \"{workdir / 'data'}\"\n{text}")
    proc = start("bastion-tls", [env.bastion_bin, "run", "-c", str(cfg)],
                 workdir / "stdout.log", cpus=env.proxy_cpus, cwd=workdir,
                 env={"OPENSSL_CONF": str(tls.openssl_conf)})
    return Running("bastion", port, proc, _bastion_version(env.bastion_bin), tls=True)


def start_caddy_tls(env: Env) -> Running:
    tls = _tls(env)
    workdir = env.tmp / "caddy-tls"
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = _caddy_config(workdir, port, env.backend_port)
    server = config["apps"]["http"]["servers"]["bench"]
    server["protocols"] = ["h1", "h2"]
    server["tls_connection_policies"] = [{
        "certificate_selection": {"any_tag": ["bench"]},
        "default_sni": "localhost",  # clients connecting to an IP address send no SNI
        "protocol_min": "tls1.3",
        "curves": ["x25519"],
    }]
    config["apps"]["tls"] = {
        "certificates": {"load_files": [
            {"certificate": str(tls.cert), "key": str(tls.key), "tags": ["bench"]}]},
        "session_tickets": {"disabled": True},
    }
    return _caddy_start(env, workdir, config, "caddy-tls", tls=True)


def start_haproxy_tls(env: Env) -> Running:
    tls = _tls(env)
    workdir = env.tmp / "haproxy-tls"
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    bind = (f"bind 127.0.0.1:{port} ssl crt {tls.combined} alpn h2,http/1.1 "
            f"ssl-min-ver TLSv1.3 curves X25519 ciphersuites {tlscert.TLS13_SUITE} "
            "no-tls-tickets")
    return _haproxy_start(env, workdir, port, bind, "tune.ssl.cachesize 0", "haproxy-tls",
                          tls=True)


def _rate_limited(store: str) -> Callable[[Env], Running]:
    """A starter of bench/redis_targets.py (imported when used: it imports this module)."""

    def starter(env: Env) -> Running:
        import redis_targets

        return redis_targets.start_bastion_rl(env, store)

    return starter


@dataclass(frozen=True)
class Target:
    name: str
    binary: str  # "" when nothing beyond the backend is needed
    starter: Callable[[Env], Running]
    description: str
    tls_starter: Callable[[Env], Running] | None = None  # for the HTTPS scenarios


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("none", "", start_none, "wrk -> backend nginx directly (no proxy)"),
        Target("nginx", "nginx", start_nginx, "nginx reverse proxy, 1 worker, upstream keepalive",
               start_nginx_tls),
        Target("bastion", "bastion", start_bastion, "bastion, 1 worker, access log off",
               start_bastion_tls),
        Target("bastion-observe", "bastion", start_bastion_observe,
               "bastion, 1 worker, every observability feature on: metrics and admin "
               "listeners, statistics, trace context, an alert rule (observe scenario only)"),
        Target("bastion-json", "bastion", start_bastion_json,
               "bastion, 1 worker, JSON access log to a file"),
        Target("bastion-pool-rr", "bastion", start_bastion_pool_rr,
               "bastion, 1 worker, 3-endpoint pool (3 nginx backends), round robin"),
        Target("bastion-pool-ewma", "bastion", start_bastion_pool_ewma,
               "bastion, 1 worker, 3-endpoint pool (3 nginx backends), peak-EWMA"),
        Target("bastion-policy", "bastion", start_bastion_policy,
               "bastion, 1 worker, API key + rate limit + header rules + JSON access log "
               "on the route (policy scenario only)"),
        Target("bastion-rl", "bastion", _rate_limited("memory"),
               "bastion, 1 worker, a rate limit that never refuses, counted in process "
               "(rl-redis scenarios only)"),
        Target("bastion-rl-redis-tcp", "bastion", _rate_limited("tcp"),
               "bastion-rl counting in a local redis-server over TCP on loopback "
               "(rl-redis scenarios only)"),
        Target("bastion-rl-redis-unix", "bastion", _rate_limited("unix"),
               "bastion-rl counting in a local redis-server over its Unix socket "
               "(rl-redis scenarios only)"),
        Target("floor", "", start_floor,
               "reference floor: a uvloop + httptools byte relay with no features"),
        Target("caddy", "caddy", start_caddy, "Caddy reverse_proxy, GOMAXPROCS=1",
               start_caddy_tls),
        Target("haproxy", "haproxy", start_haproxy, "HAProxy, nbthread 1, http-reuse always",
               start_haproxy_tls),
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
