"""The rate-limited route of the rl-redis scenarios: counted in process or in Redis.

Three bastion targets serve the same route (`GET /`, one rate limit per client address,
high enough never to refuse: what is measured is the counting, not refusals):

- ``bastion-rl``: the in-process store (no ``state`` section), the baseline;
- ``bastion-rl-redis-tcp``: ``state.redis`` on a local redis-server over TCP (loopback);
- ``bastion-rl-redis-unix``: the same over the server's Unix socket.

Each Redis target starts a redis-server of its own (no persistence), pinned with wrk and
the backend (the load CPUs): the proxy's core stays the proxy's, and Redis is another
service the gateway talks to, as on a real machine.
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

from procs import Proc, free_port, start
from targets import Env, Running, _bastion_version

RL_RATE = "1000000/s"  # never refuses at any rate wrk can reach here


def redis_available() -> bool:
    return shutil.which("redis-server") is not None


def start_redis(workdir: Path, cpus: set[int] | None) -> tuple[Proc, int, Path]:
    """A redis-server on a free loopback port and a Unix socket in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    sock = workdir / "redis.sock"
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
           "--unixsocket", str(sock), "--unixsocketperm", "700",
           "--save", "", "--appendonly", "no", "--dir", str(workdir)]
    proc = start("redis-server", cmd, workdir / "redis.log", cpus=cpus)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not proc.alive():
            raise OSError(f"redis-server exited: {proc.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(64).startswith(b"+PONG"):
                    return proc, port, sock
        except OSError:
            pass
        time.sleep(0.05)
    proc.stop()
    raise OSError("redis-server did not answer PING")


def _rl_yaml(port: int, backend_port: int, data_dir: Path, state: str) -> str:
    return f"""\
listen: {{http: 127.0.0.1:{port}}}
workers: 1
data_dir: "{data_dir}"
access_log: {{format: "off"}}
stats: {{enabled: false}}
tracing: {{traceparent: false}}
{state}sites:
  - hosts: ["*"]
    routes:
      - path: /
        proxy: {{upstreams: ["http://127.0.0.1:{backend_port}"]}}
        rate_limits:
          - {{rate: {RL_RATE}, key: client_ip}}
"""


def start_bastion_rl(env: Env, store: str) -> Running:
    """``store``: "memory", "tcp" or "unix"."""
    name = "bastion-rl" if store == "memory" else f"bastion-rl-redis-{store}"
    workdir = env.tmp / name
    workdir.mkdir(parents=True, exist_ok=True)
    extra: list[Proc] = []
    state = ""
    if store != "memory":
        if not redis_available():
            raise OSError("redis-server not installed")
        redis, redis_port, sock = start_redis(workdir / "redis", env.load_cpus)
        extra.append(redis)
        url = f"unix://{sock}" if store == "unix" else f"redis://127.0.0.1:{redis_port}/0"
        # a timeout of 1 s, not the default 50 ms: with 64 requests in flight on a shared
        # machine a few waited longer than 50 ms, opened the breaker and were counted in
        # process, which is faster than what is measured here. A fallback would still be
        # a 200: the run reports the openings the target logged (`fallback_note`)
        state = f'state: {{redis: "{url}", timeout: 1s}}\n'
    port = free_port()
    cfg = workdir / "bastion.yaml"
    cfg.write_text(_rl_yaml(port, env.backend_port, workdir / "data", state))
    proc = start(name, [env.bastion_bin, "run", "-c", str(cfg)], workdir / "stdout.log",
                 cpus=env.proxy_cpus, cwd=workdir)
    return Running(name, port, proc, _bastion_version(env.bastion_bin), extra=extra)


def fallback_note(running: Running) -> str:
    """Whether the target ever fell back to counting locally (its log says so once per
    opening of the breaker): a run that did measured less than Redis."""
    text = ""
    if running.proc is not None:
        text = running.proc.log_path.read_text(errors="replace")
    opened = text.count("unavailable after")
    if opened:
        return (f"{running.name}: Redis was unavailable {opened} time(s) during the runs: "
                "some requests were counted locally (see its log)")
    return f"{running.name}: every request was counted in Redis (the store never fell back)"
