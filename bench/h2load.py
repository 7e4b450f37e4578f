"""Running h2load (nghttp2-client) for the HTTP/2 scenario and parsing its output."""

from __future__ import annotations

import re
import shutil
import subprocess

from procs import pin_prefix
from wrk import WrkResult, to_us

MISSING = ("h2load not found: the h2 scenario needs it "
           "(apt-get install -y nghttp2-client); h2 not measured")


def available() -> bool:
    return shutil.which("h2load") is not None


def parse(output: str) -> WrkResult:
    """h2load prints no percentiles: p50/p99 stay 0 and ``mean_us`` is the mean request time.
    ``protocol`` is what ALPN chose; h2load falls back to HTTP/1.1 when the server does not
    offer h2, and such a run is not an HTTP/2 result."""
    res = WrkResult(raw=output)
    if m := re.search(r"^Application protocol:\s*(\S+)", output, re.MULTILINE):
        res.protocol = m.group(1)
    elif "No protocol negotiated" in output or "ALPN" in output:
        res.protocol = "none"
    if m := re.search(r"finished in ([0-9.]+[a-z]+), ([0-9.]+) req/s", output):
        res.duration_s = to_us(m.group(1)) / 1_000_000.0
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", output)
    if m:
        res.requests = int(m.group(4))
        failed, errored, timeout = int(m.group(5)), int(m.group(6)), int(m.group(7))
        res.errors = {k: v for k, v in
                      (("failed", failed), ("errored", errored), ("timeout", timeout)) if v}
    if m := re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output):
        res.non_2xx = int(m.group(2)) + int(m.group(3)) + int(m.group(4))
    if m := re.search(r"traffic: .*?\((\d+)\) total", output):
        res.bytes = int(m.group(1))
    if m := re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", output):
        res.max_us = to_us(m.group(2))
        res.mean_us = to_us(m.group(3))
    if res.duration_s > 0:
        # The printed req/s counts every finished request; count the successful ones only.
        res.rps = res.requests / res.duration_s
    return res


def run(url: str, *, duration: float, warmup: float, connections: int, streams: int,
        cpus: set[int] | None = None) -> WrkResult:
    """Run h2load for ``duration`` seconds (after ``warmup`` unrecorded seconds)."""
    cmd = [*pin_prefix(cpus), "h2load", "-t1", f"-c{connections}", f"-m{streams}",
           f"-D{max(1, round(duration))}"]
    if warmup > 0:
        cmd += ["--warm-up-time", f"{warmup:g}s"]
    cmd.append(url)
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=duration + warmup + 60, check=False)
    res = parse(proc.stdout + ("\n" + proc.stderr if proc.stderr else ""))
    res.exit_code = proc.returncode
    return res
