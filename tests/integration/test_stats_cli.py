"""`bastion stats` on a data dir written by real writer processes: several processes
adding into one statistics file, read while one of them still has it open (WAL) and
after they stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]

# one worker process: writes `seconds` Intervals ending one second ago, then waits for a
# line on stdin before it closes its writer (so a test can read while it is open)
WORKER = """
import sys, time
from pathlib import Path
from bastion.observe.stats import StatsWriter
from statskit import CHROME, GOOGLEBOT, figures, interval

data_dir, share, seconds = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
now = int(time.time())
writer = StatsWriter(data_dir)
for i in range(seconds):
    start = now - seconds + i
    writer.add(interval(
        start,
        {
            "api": figures(share, status={200: share - 1, 502: 1}, bytes_out=1000 * share),
            "static": figures(share, latency=0.0004, upstream=None, cache={"HIT": share}),
        },
        paths={"/api/orders": share, "/index.html": share},
        not_found={"/wp-login.php": 1} if i % 10 == 0 else {},
        agents={CHROME: share, GOOGLEBOT: share},
        consumers={"mobile-app": [share, 1]},
        errors=[{"time": start + 0.5, "route": "api", "method": "GET", "path": "/api/orders",
                 "status": 502, "request_id": f"req-{share}-{i}", "upstream": "127.0.0.1:9"}],
    ))
assert writer.flush()
print("written", flush=True)
sys.stdin.readline()
writer.close()
"""


def env() -> dict[str, str]:
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, str(TESTS)])}


def start_worker(data_dir: Path, share: int, seconds: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(data_dir), str(share), str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env(),
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "written"
    return process


def stop(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.write("\n")
    process.stdin.close()
    assert process.wait(timeout=30) == 0


def bastion_stats(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion", "stats", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env(),
        cwd=cwd,  # no bastion.yaml there: the data dir comes from the flag
    )


def test_stats_of_two_worker_processes_while_running_and_after(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_worker(data_dir, share=4, seconds=30)
    second = start_worker(data_dir, share=6, seconds=30)
    try:
        # both writers still hold the file open: the command reads a consistent snapshot
        running = bastion_stats(
            "--since", "1h", "--json", "--data-dir", str(data_dir), cwd=tmp_path
        )
        assert running.returncode == 0, running.stderr
        assert str(data_dir / "stats.sqlite3") in running.stderr
        summary = json.loads(running.stdout)
        assert summary["totals"]["requests"] == 2 * 30 * (4 + 6)
    finally:
        stop(first)
        stop(second)

    out = bastion_stats("--since", "1h", "--json", "--data-dir", str(data_dir), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    totals = summary["totals"]
    assert totals["requests"] == 600
    assert totals["status"]["5xx"] == 60 and totals["status"]["2xx"] == 540
    assert totals["cache"] == {"hits": 300, "lookups": 300, "ratio": 1.0}
    assert totals["bytes_out"] == 30 * 1000 * 10
    assert summary["routes"][0]["route"] == "api"
    assert summary["routes"][0]["error_rate"] == 0.2
    assert summary["top"]["paths"] == [
        {"key": "/api/orders", "requests": 300},
        {"key": "/index.html", "requests": 300},
    ]
    assert summary["top"]["not_found"] == [{"key": "/wp-login.php", "requests": 6}]
    assert summary["top"]["consumers"] == [{"key": "mobile-app", "requests": 300, "limited": 60}]
    assert summary["top"]["browsers"] == [{"key": "Chrome", "requests": 300}]
    assert summary["top"]["bots"] == [{"key": "Googlebot", "requests": 300}]
    assert len(summary["recent_errors"]) == 20
    assert summary["recent_errors"][0]["request_id"] in ("req-4-29", "req-6-29")

    text = bastion_stats("--since", "1h", "--data-dir", str(data_dir), cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    report = text.stdout
    assert str(data_dir / "stats.sqlite3") in report.splitlines()[0]
    assert "600 (" in report  # requests
    assert "5xx 10.0%" in report
    assert "300 hits of 300 lookups (100.0%)" in report
    assert "/api/orders" in report and "/wp-login.php" in report
    assert "mobile-app" in report and "Googlebot" in report
    assert "req-4-29" in report or "req-6-29" in report
    for line in report.splitlines():
        if line.strip().startswith("api "):
            assert "300" in line and "20.0%" in line


def test_stats_of_an_empty_data_dir(tmp_path: Path) -> None:
    out = bastion_stats("--data-dir", str(tmp_path / "empty"), cwd=tmp_path)
    assert out.returncode == 1
    assert f"no statistics in {tmp_path / 'empty'} yet" in out.stdout
    as_json = bastion_stats("--json", "--since", "7d", "--data-dir", str(tmp_path), cwd=tmp_path)
    assert as_json.returncode == 0
    assert json.loads(as_json.stdout)["totals"]["requests"] == 0


def test_stats_finds_the_data_dir_of_the_config(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    stop(start_worker(data_dir, share=2, seconds=5))
    config = tmp_path / "bastion.yaml"
    config.write_text(
        f"data_dir: {data_dir}\n"
        "sites:\n  - hosts: ['*']\n    routes:\n"
        f"      - path: /\n        static: {{root: {tmp_path}}}\n"
    )
    environment = {k: v for k, v in env().items() if k != "BASTION_DATA_DIR"}
    out = subprocess.run(
        [sys.executable, "-m", "bastion", "stats", "-c", str(config), "--since", "5m"],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert str(data_dir / "stats.sqlite3") in out.stdout
    assert "20 (" in out.stdout  # 5 seconds of 2 + 2 requests


def test_stats_of_a_damaged_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "stats.sqlite3").write_bytes(b"this is not a database" * 200)
    out = bastion_stats("--data-dir", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 1
    assert f"cannot read the statistics in {tmp_path / 'stats.sqlite3'}" in out.stderr
    assert "Traceback" not in out.stderr
