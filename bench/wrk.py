"""Running wrk and parsing its output."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from procs import pin_prefix

# wrk calls done() once after the run; latency values are in microseconds.
LUA_DONE = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_JSON {\\"requests\\":%d,\\"duration_us\\":%d,\\"bytes\\":%d," ..
    "\\"connect\\":%d,\\"read\\":%d,\\"write\\":%d,\\"status\\":%d,\\"timeout\\":%d," ..
    "\\"p50\\":%d,\\"p90\\":%d,\\"p99\\":%d,\\"p999\\":%d,\\"max\\":%d,\\"mean\\":%.2f}\\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
"""

_UNITS_US = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0, "m": 60_000_000.0, "h": 3_600_000_000.0}


@dataclass
class WrkResult:
    rps: float = 0.0
    requests: int = 0
    duration_s: float = 0.0
    p50_us: float = 0.0
    p90_us: float = 0.0
    p99_us: float = 0.0
    p999_us: float = 0.0
    max_us: float = 0.0
    mean_us: float = 0.0
    transfer_per_s: str = ""
    bytes: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    non_2xx: int = 0
    rss_peak_mib: float = 0.0
    foreign_cpu_pct: float = 0.0  # CPU used by processes we did not start, % of one CPU
    steal_pct: float = 0.0
    proxy_cpu_pct: float = 0.0  # CPU used by the target's processes, % of one CPU
    proxy_user_s: float = 0.0  # CPU seconds the target's processes used in user space
    proxy_system_s: float = 0.0  # and in the kernel, on their behalf
    protocol: str = ""  # h2load: the protocol ALPN chose
    noisy: bool = False
    exit_code: int = 0
    raw: str = ""

    @property
    def error_count(self) -> int:
        return sum(self.errors.values()) + self.non_2xx

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.error_count == 0 and self.requests > 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["error_count"] = self.error_count
        data["ok"] = self.ok
        data["bytes_per_response"] = round(self.bytes / self.requests) if self.requests else 0
        data["rps_per_cpu"] = self.rps_per_cpu
        data["user_us"] = self.user_us
        data["system_us"] = self.system_us
        return data

    @property
    def rps_per_cpu(self) -> float:
        """Requests per second of the target's CPU time: its capacity when the load
        generator, not the target, is the bottleneck (new TLS handshakes)."""
        return self.rps * 100.0 / self.proxy_cpu_pct if self.proxy_cpu_pct > 0 else 0.0

    @property
    def user_us(self) -> float:
        """The target's user-space CPU time a request, in microseconds."""
        return self.proxy_user_s * 1e6 / self.requests if self.requests else 0.0

    @property
    def system_us(self) -> float:
        """The target's kernel CPU time a request, in microseconds: where a new connection's
        cost splits between the proxy's own work and the TCP stack's."""
        return self.proxy_system_s * 1e6 / self.requests if self.requests else 0.0


def write_lua(directory: Path) -> Path:
    path = directory / "done.lua"
    path.write_text(LUA_DONE)
    return path


def to_us(value: str) -> float:
    """Convert a wrk duration such as ``1.23ms`` or ``850.00us`` to microseconds."""
    match = re.fullmatch(r"([0-9.]+)([a-z]+)", value.strip())
    if not match or match.group(2) not in _UNITS_US:
        raise ValueError(f"bad wrk duration: {value!r}")
    return float(match.group(1)) * _UNITS_US[match.group(2)]


def parse(output: str) -> WrkResult:
    """Parse wrk's text output (with --latency) plus the BENCH_JSON line from the Lua script."""
    res = WrkResult(raw=output)
    if m := re.search(r"Requests/sec:\s*([0-9.]+)", output):
        res.rps = float(m.group(1))
    if m := re.search(r"Transfer/sec:\s*(\S+)", output):
        res.transfer_per_s = m.group(1)
    if m := re.search(r"(\d+) requests in ([0-9.]+[a-z]+)", output):
        res.requests = int(m.group(1))
        res.duration_s = to_us(m.group(2)) / 1_000_000.0
    # "Latency Distribution" block: "     50%  512.00us"
    dist: dict[str, float] = {}
    for pct, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", output, re.MULTILINE):
        dist[pct] = to_us(value)
    res.p50_us = dist.get("50", 0.0)
    res.p90_us = dist.get("90", 0.0)
    res.p99_us = dist.get("99", 0.0)
    if m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    ):
        res.errors = {
            "connect": int(m.group(1)),
            "read": int(m.group(2)),
            "write": int(m.group(3)),
            "timeout": int(m.group(4)),
        }
    if m := re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output):
        res.non_2xx = int(m.group(1))
    # The Lua summary is exact (the text output rounds to 2 decimals and a unit).
    if m := re.search(r"^BENCH_JSON (\{.*\})\s*$", output, re.MULTILINE):
        data = json.loads(m.group(1))
        res.requests = int(data["requests"])
        res.bytes = int(data["bytes"])
        if data["duration_us"] > 0:
            res.duration_s = data["duration_us"] / 1_000_000.0
            res.rps = res.requests / res.duration_s
        res.p50_us = float(data["p50"])
        res.p90_us = float(data["p90"])
        res.p99_us = float(data["p99"])
        res.p999_us = float(data["p999"])
        res.max_us = float(data["max"])
        res.mean_us = float(data["mean"])
        res.errors = {k: int(data[k]) for k in ("connect", "read", "write", "timeout")}
        # summary.errors.status counts responses with status > 399; the text line counts
        # every non-2xx/3xx response. Keep the larger.
        res.non_2xx = max(res.non_2xx, int(data["status"]))
    # Drop zero-valued error kinds for compact reports.
    res.errors = {k: v for k, v in res.errors.items() if v}
    return res


def run(
    url: str,
    *,
    duration: float,
    connections: int,
    threads: int,
    lua: Path,
    headers: list[str] | None = None,
    cpus: set[int] | None = None,
    timeout_s: float = 5.0,
) -> WrkResult:
    """Run wrk once against ``url`` and return the parsed result."""
    cmd = [
        *pin_prefix(cpus),
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={timeout_s:g}s",
        "--latency",
        "-s",
        str(lua),
    ]
    for header in headers or []:
        cmd += ["-H", header]
    cmd.append(url)
    proc = subprocess.run(
        cmd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=False,
    )
    res = parse(proc.stdout + ("\n" + proc.stderr if proc.stderr else ""))
    res.exit_code = proc.returncode
    return res
