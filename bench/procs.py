"""Process helpers for the benchmark: start/stop process groups, CPU pinning, RSS sampling."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse_cpus(spec: str) -> set[int]:
    """Parse a CPU list such as "0", "1,3" or "0-2"."""
    cpus: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus.update(range(int(lo), int(hi) + 1))
        else:
            cpus.add(int(part))
    if not cpus:
        raise ValueError(f"empty CPU list: {spec!r}")
    return cpus


def cpus_arg(cpus: set[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def pin_prefix(cpus: set[int] | None) -> list[str]:
    """A command prefix that pins the child (and its descendants) to ``cpus``."""
    if not cpus:
        return []
    taskset = shutil.which("taskset")
    if taskset is None:
        return []
    return [taskset, "-c", cpus_arg(cpus)]


@dataclass
class Proc:
    """A started process running in its own process group (session)."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    cpus: set[int] | None = None
    _log_file: object = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the whole process group: SIGTERM, then SIGKILL."""
        pgid = self.popen.pid  # start_new_session=True makes the child a group leader
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=timeout)
        # Children that outlived the leader (or ignored SIGTERM) still share the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=timeout)
        log_file = self._log_file
        if log_file is not None and hasattr(log_file, "close"):
            log_file.close()


def _pin_self(cpus: set[int]) -> None:
    os.sched_setaffinity(0, cpus)


def start(
    name: str,
    cmd: Sequence[str],
    log_path: Path,
    *,
    cpus: set[int] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Proc:
    """Start ``cmd`` in a new session, pinned to ``cpus``, output to ``log_path``."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    prefix = pin_prefix(cpus)
    preexec = None
    if cpus and not prefix:
        # No taskset: pin in the child before exec (we are single-threaded at this point).
        def preexec() -> None:
            _pin_self(cpus)

    log_file = open(log_path, "wb")  # noqa: SIM115 - closed in Proc.stop
    popen = subprocess.Popen(
        [*prefix, *cmd],
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=full_env,
        cwd=str(cwd) if cwd else None,
        start_new_session=True,
        preexec_fn=preexec,
    )
    return Proc(name=name, popen=popen, log_path=log_path, cpus=cpus, _log_file=log_file)


def http_get_ok(port: int, path: str = "/", timeout: float = 1.0) -> bool:
    """One HTTP/1.1 GET to 127.0.0.1:port; True on a 2xx status line."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "User-Agent: bastion-bench\r\nConnection: close\r\n\r\n"
    ).encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(request)
            data = b""
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            # Drain the rest so the server sees an orderly close.
            with contextlib.suppress(OSError):
                while sock.recv(65536):
                    pass
    except OSError:
        return False
    parts = data.split(b" ", 2)
    return len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1][:1] == b"2"


def wait_ready(proc: Proc, port: int, timeout: float = 20.0, path: str = "/",
               get: Callable[[int, str], bool] | None = None) -> None:
    """Poll until ``port`` answers a GET with 2xx; raise RuntimeError with the log tail if not.
    ``get`` replaces the plain-HTTP GET (the HTTPS targets pass theirs)."""
    get_ok = get or http_get_ok
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(
                f"{proc.name} exited with code {proc.popen.returncode}:\n{proc.log_tail()}"
            )
        if get_ok(port, path):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not answer on port {port} in {timeout:.0f}s:\n"
                       f"{proc.log_tail()}")


# --- RSS -----------------------------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Field 2 (comm) may contain spaces and parentheses: split after the last ')'.
        rest = stat[stat.rfind(b")") + 2 :].split()
        if len(rest) < 2:
            continue
        children.setdefault(int(rest[1]), []).append(int(entry))
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children = _children_map()
    tree: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def tree_rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` and its descendants, in MiB."""
    return sum(rss_kib(p) for p in process_tree(pid)) / 1024.0


class RssSampler:
    """Samples the RSS of a process tree in a background thread and keeps the peak."""

    def __init__(self, pid: int | None, interval: float = 0.2) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_mib = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        assert self.pid is not None
        while not self._stop.is_set():
            value = tree_rss_mib(self.pid)
            self.samples += 1
            self.peak_mib = max(self.peak_mib, value)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        if self.pid is not None:
            self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


# --- foreign CPU load ------------------------------------------------------------------------
# Other work on the machine (test suites, builds) skews a benchmark on 2 cores. We estimate it
# as the machine's busy CPU time minus the CPU time of the processes we started.

_HZ = os.sysconf("SC_CLK_TCK")


def _machine_busy_jiffies() -> tuple[int, int]:
    """(user+nice+system, steal) jiffies over all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    values = [int(x) for x in fields[1:]]
    user, nice, system = values[0], values[1], values[2]
    steal = values[7] if len(values) > 7 else 0
    return user + nice + system, steal


def _proc_user_system(pid: int) -> tuple[int, int]:
    """(user, system) jiffies of one process; (0, 0) once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0, 0
    rest = stat[stat.rfind(b")") + 2 :].split()
    # utime and stime are fields 14 and 15 (1-based); rest starts at field 3.
    return int(rest[11]), int(rest[12])


def _proc_jiffies(pid: int) -> int:
    return sum(_proc_user_system(pid))


def tree_user_system_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU time used so far by ``pid`` and its live descendants: the
    system part is the kernel's work on the target's behalf (its system calls, the TCP
    stack under them), which the instruction counts of callgrind leave out."""
    user = system = 0
    for p in process_tree(pid):
        u, s = _proc_user_system(p)
        user += u
        system += s
    return user / _HZ, system / _HZ


@dataclass
class CpuSnapshot:
    time: float
    busy: int
    steal: int
    ours: int


def cpu_snapshot(root_pids: list[int]) -> CpuSnapshot:
    """Machine busy time and the CPU time of our process trees, this process and its reaped
    children (wrk runs). Kernel threads (ksoftirqd handling our loopback traffic, kworkers)
    count as ours: their work is mostly caused by the benchmark itself."""
    busy, steal = _machine_busy_jiffies()
    children = _children_map()
    ours = 0
    todo = [*root_pids, 2]  # pid 2 is kthreadd, the parent of every kernel thread
    while todo:
        current = todo.pop()
        ours += _proc_jiffies(current)
        todo.extend(children.get(current, []))
    t = os.times()
    ours += round((t.user + t.system + t.children_user + t.children_system) * _HZ)
    return CpuSnapshot(time.monotonic(), busy, steal, ours)


def foreign_cpu_pct(before: CpuSnapshot, after: CpuSnapshot) -> tuple[float, float]:
    """(foreign busy, steal) between two snapshots, in percent of one CPU."""
    elapsed = max(after.time - before.time, 1e-6) * _HZ
    foreign = (after.busy - before.busy) - (after.ours - before.ours)
    return max(0.0, 100.0 * foreign / elapsed), 100.0 * (after.steal - before.steal) / elapsed


def wait_quiet(root_pids: list[int], limit_pct: float, max_wait: float,
               window: float = 1.0) -> float:
    """Wait until foreign CPU load over ``window`` seconds is below ``limit_pct`` of one CPU,
    for at most ``max_wait`` seconds. Returns the last measured foreign load."""
    deadline = time.monotonic() + max_wait
    while True:
        before = cpu_snapshot(root_pids)
        time.sleep(window)
        load, _ = foreign_cpu_pct(before, cpu_snapshot(root_pids))
        if load < limit_pct or time.monotonic() >= deadline:
            return load
