"""examples/cluster/run.sh run as a user runs it: one Redis, a demo backend and two bastion
instances, a burst split across both, exactly the limit admitted in total, and nothing
left running or on disk afterwards."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rediskit import require_redis

pytestmark = pytest.mark.timeout(90)

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "cluster" / "run.sh"


def environment(tmp_path: Path) -> dict[str, str]:
    # this checkout's bastion (PYTHONPATH is inherited), temp dirs under the test's own
    return {**os.environ, "BASTION": f"{sys.executable} -m bastion", "PYTHON": sys.executable,
            "TMPDIR": str(tmp_path)}  # fmt: skip


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_a_burst_across_both_instances_admits_exactly_the_limit(tmp_path: Path) -> None:
    require_redis()
    done = subprocess.run(
        ["bash", str(SCRIPT), "--burst", "30"], capture_output=True, text=True, timeout=80,
        env=environment(tmp_path), check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(r"admitted (\d+) of 30 \(port (\d+): (\d+), port (\d+): (\d+)\), "
                      r"refused (\d+)", done.stdout)  # fmt: skip
    assert found, done.stdout
    total, port1, one, port2, two, refused = map(int, found.groups())
    assert (total, refused) == (10, 20)
    assert one > 0 and two > 0  # both admitted some: the count is shared
    assert not listening(port1) and not listening(port2)  # stopped
    assert list(tmp_path.iterdir()) == []  # its temporary directory removed


def test_started_without_a_burst_it_prints_what_to_try_and_stops_on_ctrl_c(
    tmp_path: Path,
) -> None:
    require_redis()
    proc = subprocess.Popen(
        ["bash", str(SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=environment(tmp_path), start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    printed = ""
    try:
        deadline = time.monotonic() + 60
        while "Ctrl-C stops everything" not in printed:
            assert time.monotonic() < deadline and proc.poll() is None, printed
            printed += proc.stdout.readline()
        ports = [int(p) for p in re.findall(r"instance \d +http://127\.0\.0\.1:(\d+)/", printed)]
        assert len(ports) == 2, printed
        assert all(listening(port) for port in ports)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in its terminal does
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not any(listening(port) for port in ports)
    assert list(tmp_path.iterdir()) == []
