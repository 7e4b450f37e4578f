"""A real redis-server for the tests (Debian's ``redis-server``), never a fake.

`redis_server` starts one on a free port and a Unix socket in the test's directory, with
no persistence; it can be paused (SIGSTOP: every command hangs, as a frozen or partitioned
server), resumed, killed and started again on the same port. Under CI=true a missing
redis-server fails the tests instead of skipping them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import free_port, wait_for_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_SENTINEL = shutil.which("redis-sentinel") or "/usr/bin/redis-sentinel"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def require_redis() -> None:
    if all(Path(p).exists() for p in (REDIS_SERVER, REDIS_SENTINEL, REDIS_CLI)):
        return
    message = "redis is not installed (apt-get install redis-server redis-sentinel redis-tools)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


class RedisServer:
    def __init__(self, directory: Path, extra: tuple[str, ...] = ()) -> None:
        self.directory = directory
        self.extra = extra  # more redis-server arguments
        self.port = free_port()
        self.socket_path = directory / "redis.sock"
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.unix_url = f"unix://{self.socket_path}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        log = (self.directory / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
             "--unixsocket", str(self.socket_path), "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", str(self.directory), *self.extra],
            stdout=log, stderr=log,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.command("PING") == "+PONG":
                return self
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server did not start: see " + str(log.name))
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING")

    def command(self, *words: str) -> str:
        """One command over a plain socket (RESP); the first line of the answer, or ''."""
        data = b"*%d\r\n" % len(words) + b"".join(
            b"$%d\r\n%s\r\n" % (len(w.encode()), w.encode()) for w in words
        )
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as conn:
                conn.sendall(data)
                reply = b""
                while not reply.endswith(b"\r\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
        except OSError:
            return ""
        return reply.decode(errors="replace").split("\r\n")[0]

    def get(self, key: str) -> str:
        return subprocess.run(
            [REDIS_CLI, "-p", str(self.port), "--raw", "GET", key], capture_output=True, text=True
        ).stdout

    def info(self, section: str) -> str:
        return subprocess.run(
            [REDIS_CLI, "-p", str(self.port), "INFO", section], capture_output=True, text=True
        ).stdout

    def keys(self, pattern: str = "*") -> int:
        """How many keys match ``pattern``."""
        return len(self.all_keys(pattern))

    def all_keys(self, pattern: str = "*") -> list[str]:
        out = subprocess.run(
            [REDIS_CLI, "-p", str(self.port), "--raw", "KEYS", pattern],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return [line for line in out.stdout.splitlines() if line]

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()


class Sentinel:
    """A redis-sentinel watching ``master`` under the name ``service``."""

    def __init__(
        self, directory: Path, master: RedisServer, service: str = "main", quorum: int = 1
    ) -> None:
        self.port = free_port()
        self.service = service
        conf = directory / "sentinel.conf"  # (Sentinel rewrites its file)
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {directory}\n"
            f"sentinel monitor {service} 127.0.0.1 {master.port} {quorum}\n"
            # a failover within a second or two of the master's end
            f"sentinel down-after-milliseconds {service} 300\n"
            f"sentinel failover-timeout {service} 2000\n"
        )
        log = (directory / "sentinel.log").open("ab")
        self.proc = subprocess.Popen([REDIS_SENTINEL, str(conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            out = subprocess.run(
                [REDIS_CLI, "-p", str(self.port), "SENTINEL", "get-master-addr-by-name", service],
                capture_output=True, text=True,
            )  # fmt: skip
            if str(master.port) in out.stdout:
                return
            time.sleep(0.05)
        raise RuntimeError("redis-sentinel did not start")

    def ask(self, *words: str) -> str:
        return subprocess.run(
            [REDIS_CLI, "-p", str(self.port), *words], capture_output=True, text=True
        ).stdout

    def master_port(self) -> int:
        """The port of the master it names now."""
        out = self.ask("SENTINEL", "get-master-addr-by-name", self.service).split()
        return int(out[1]) if len(out) == 2 else 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class SentinelGroup:
    """Three Sentinels watching one master with a quorum of two, as a real deployment has
    them: a failover needs two of them to agree that the master is down, and a majority to
    elect the one that carries it out."""

    def __init__(self, directory: Path, master: RedisServer, service: str = "main") -> None:
        self.service = service
        self.members: list[Sentinel] = []
        try:
            for index in range(3):
                (directory / f"sentinel{index}").mkdir()
                self.members.append(
                    Sentinel(directory / f"sentinel{index}", master, service, quorum=2)
                )
            # each finds the two others through the master's hello channel (every 2 s)
            deadline = time.monotonic() + 20
            while not all(
                m.ask("SENTINEL", "sentinels", service).count("name") >= 2 for m in self.members
            ):
                if time.monotonic() > deadline:
                    raise RuntimeError("the three Sentinels did not find each other")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    @property
    def port(self) -> int:
        return self.members[0].port

    @property
    def addresses(self) -> list[str]:
        """host:port of every member, as ``state.redis.sentinel`` lists them."""
        return [f"127.0.0.1:{m.port}" for m in self.members]

    def ask(self, *words: str) -> str:
        return self.members[0].ask(*words)

    def master_port(self) -> int:
        """The master's port once two members agree on it, else 0."""
        ports = [m.master_port() for m in self.members]
        best = max(set(ports), key=ports.count)
        return best if ports.count(best) >= 2 else 0

    def stop(self) -> None:
        for member in self.members:
            member.stop()


def start_cluster(
    directory: Path, size: int = 3, replicas: int = 0, options: tuple[str, ...] = ()
) -> list[RedisServer]:
    """``size`` nodes making one Redis Cluster, every slot served: ``replicas`` replicas
    per master (``size`` counts them), ``options`` more redis-server arguments of each."""
    nodes = []
    for n in range(size):
        node_dir = directory / f"node{n}"
        node_dir.mkdir()
        extra = ("--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / "nodes.conf"),
                 "--cluster-port", str(free_port()), *options)  # fmt: skip
        nodes.append(RedisServer(node_dir, extra).start())
    subprocess.run(
        [REDIS_CLI, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
         "--cluster-replicas", str(replicas), "--cluster-yes"],
        capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        states = [
            subprocess.run(
                [REDIS_CLI, "-p", str(n.port), "CLUSTER", "INFO"], capture_output=True, text=True
            ).stdout
            for n in nodes
        ]
        if all("cluster_state:ok" in s for s in states):
            return nodes
        time.sleep(0.1)
    raise RuntimeError("the Redis cluster did not come up")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[[], RedisServer]]:
    """`redis_server()` → a running RedisServer of its own; all stopped afterwards."""
    require_redis()
    made: list[RedisServer] = []

    def make() -> RedisServer:
        directory = tmp_path / f"redis{len(made)}"
        directory.mkdir()
        server = RedisServer(directory).start()
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def redis_sentinel(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer, SentinelGroup]]:
    """A master, its replica and three Sentinels watching them (as ``main``, quorum 2)."""
    require_redis()
    for name in ("master", "replica", "sentinel"):
        (tmp_path / name).mkdir()
    # (no 5 s wait before the replica's first sync)
    master = RedisServer(tmp_path / "master", ("--repl-diskless-sync-delay", "0")).start()
    replica = sentinel = None
    try:
        replica = RedisServer(
            tmp_path / "replica", ("--replicaof", "127.0.0.1", str(master.port))
        ).start()
        sentinel = SentinelGroup(tmp_path / "sentinel", master)
        deadline = time.monotonic() + 15
        while str(replica.port) not in sentinel.ask(
            "SENTINEL", "replicas", "main"
        ) or "master_link_status:up" not in replica.info("replication"):
            if time.monotonic() > deadline:
                raise RuntimeError("the Sentinel did not find the replica")
            time.sleep(0.1)
        yield master, replica, sentinel
    finally:
        for process in (sentinel, replica, master):
            if process is not None:
                process.stop()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[list[RedisServer]]:
    """Three masters making one Redis Cluster."""
    require_redis()
    (tmp_path / "cluster").mkdir()
    nodes: list[RedisServer] = []
    try:
        nodes = start_cluster(tmp_path / "cluster")
        yield nodes
    finally:
        for node in nodes:
            node.stop()


class Instance:
    """One `bastion run` sharing a Redis with others: its own ports, data dir and pid file,
    its config written from ``text`` with ``${T_…}`` placeholders (``T_PORT``, ``T_ADMIN``,
    ``T_DATA``, ``T_PID``, ``T_REDIS``, ``T_BACKEND``, and any in ``extra``) filled from the
    environment it and its commands run in."""

    def __init__(
        self,
        workdir: Path,
        redis: RedisServer,
        backend_port: int,
        text: str,
        data: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        workdir.mkdir()
        self.workdir = workdir
        self.port = free_port()
        self.admin = free_port()
        self.env = dict(
            os.environ,
            PYTHONUNBUFFERED="1",
            T_PORT=str(self.port),
            T_ADMIN=str(self.admin),
            T_DATA=data or str(workdir / "data"),
            T_PID=str(workdir / "bastion.pid"),
            T_REDIS=str(redis.port),
            T_BACKEND=str(backend_port),
            **(extra or {}),
        )
        self.config = workdir / "bastion.yaml"
        self.config.write_text(text)
        self.stderr_path = workdir / "bastion.stderr"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bastion", "run", "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=self.stderr_path.open("wb"),
            env=self.env,
        )
        try:
            wait_for_port(self.port)
            wait_for_port(self.admin)
        except TimeoutError:
            self.stop()
            raise RuntimeError("bastion did not start:\n" + self.stderr) from None

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def bastion(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A command run against this instance's config, in its environment."""
        return subprocess.run(
            [sys.executable, "-m", "bastion", *args, "-c", str(self.config)],
            capture_output=True,
            text=True,
            timeout=60,
            env=self.env,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
