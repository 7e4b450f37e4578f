"""Measurement loop: every started target, every scenario, runs interleaved round-robin.

The targets all stay up (idle when not measured) and each round runs wrk once against each
of them in turn, so slow periods of a shared or virtual machine hit all targets alike
instead of whichever one happened to be measured then.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2load
import report
import targets
import tlscert
import wrk
from procs import (
    RssSampler,
    cpu_snapshot,
    foreign_cpu_pct,
    http_get_ok,
    tree_rss_mib,
    tree_user_system_seconds,
    wait_quiet,
)


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    headers: tuple[str, ...]
    description: str
    kind: str = "http"  # "http" (wrk), "https" (wrk over TLS) or "h2" (h2load over TLS)
    connections: int | None = None  # wrk connections, when not --connections

    @property
    def tls(self) -> bool:
        return self.kind != "http"


@dataclass
class Slot:
    """One started target and its runs per scenario."""

    running: targets.Running
    idle_rss_mib: float | None = None
    runs: dict[str, list[wrk.WrkResult]] = field(default_factory=dict)
    failed: str | None = None
    unsupported: dict[str, str] = field(default_factory=dict)  # scenario -> why ("no h2")

    @property
    def pid(self) -> int | None:
        return self.running.proc.pid if self.running.proc else None


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def get_ok(running: targets.Running) -> Callable[[int, str], bool]:
    """The readiness GET for a target: plain HTTP or HTTPS."""
    if running.tls:
        return tlscert.https_get_ok
    return http_get_ok


def idle_rss(slot: Slot) -> None:
    """Idle RSS after one warm-up request, before any load."""
    get_ok(slot.running)(slot.running.port, "/")
    time.sleep(0.5)
    slot.idle_rss_mib = tree_rss_mib(slot.pid) if slot.pid else None


@dataclass
class Measure:
    args: argparse.Namespace
    lua: Path
    load_cpus: set[int] | None
    backend_pid: int

    def _wrk(self, slot: Slot, sc: Scenario, duration: float) -> wrk.WrkResult:
        if sc.kind == "h2":
            res = h2load.run(f"https://localhost:{slot.running.port}{sc.path}",
                             duration=duration, warmup=0.0,
                             connections=self.args.h2_connections,
                             streams=self.args.h2_streams, cpus=self.load_cpus)
            if res.protocol != "h2":
                slot.unsupported[sc.name] = f"no h2 (ALPN: {res.protocol or 'none'})"
                log(f"  {sc.name:<8} {slot.running.name:<13} {slot.unsupported[sc.name]}")
            return res
        scheme = "https" if sc.tls else "http"
        url = f"{scheme}://127.0.0.1:{slot.running.port}{sc.path}"
        return wrk.run(url, duration=duration,
                       connections=sc.connections or self.args.connections,
                       threads=self.args.threads, lua=self.lua, headers=list(sc.headers),
                       cpus=self.load_cpus)

    def _check_alive(self, slot: Slot, sc: Scenario) -> None:
        proc = slot.running.proc
        if proc is not None and not proc.alive():
            tail = proc.log_tail()
            last = tail.strip().splitlines()[-1][:100] if tail.strip() else ""
            slot.failed = f"failed: died during {sc.name} (exit {proc.popen.returncode}) {last}"
            log(f"  {slot.running.name} died during {sc.name}:\n{tail}")

    def _one(self, slot: Slot, sc: Scenario) -> None:
        args = self.args
        # a target's own helpers (more backends, its redis-server) are not "other load"
        roots = [self.backend_pid, *(p.pid for p in slot.running.extra)]
        roots += [slot.pid] if slot.pid else []
        if args.quiet_wait > 0:
            load = wait_quiet(roots, args.noise_limit / 2, args.quiet_wait)
            if load >= args.noise_limit / 2:
                log(f"  machine still busy ({load:.0f}% of a CPU used by other processes)")
        with RssSampler(slot.pid) as sampler:
            before = cpu_snapshot(roots)
            user0, system0 = tree_user_system_seconds(slot.pid) if slot.pid else (0.0, 0.0)
            res = self._wrk(slot, sc, args.duration)
            after = cpu_snapshot(roots)
            res.foreign_cpu_pct, res.steal_pct = foreign_cpu_pct(before, after)
            if slot.pid:
                user1, system1 = tree_user_system_seconds(slot.pid)
                res.proxy_user_s, res.proxy_system_s = user1 - user0, system1 - system0
                used = res.proxy_user_s + res.proxy_system_s
                res.proxy_cpu_pct = 100.0 * used / max(after.time - before.time, 1e-6)
        if sc.name in slot.unsupported:
            return
        res.noisy = res.foreign_cpu_pct + res.steal_pct > args.noise_limit
        res.rss_peak_mib = sampler.peak_mib
        runs = slot.runs.setdefault(sc.name, [])
        runs.append(res)
        flag = "" if res.ok else f"  ERRORS {res.errors} non-2xx {res.non_2xx}"
        if res.noisy:
            flag += "  NOISY"
        rss = f"  rss {report.fmt_mib(res.rss_peak_mib)} MB" if slot.pid else ""
        cpu = (f"  cpu {res.proxy_cpu_pct:.0f}% (user {res.user_us:.1f} + system "
               f"{res.system_us:.1f} us a request)" if slot.pid else "")
        lat = (f"p50 {report.fmt_us(res.p50_us):>7}  p99 {report.fmt_us(res.p99_us):>7}"
               if sc.kind != "h2" else f"mean {report.fmt_us(res.mean_us):>7}")
        log(f"  {sc.name:<9} {slot.running.name:<13} run {len(runs)}: {res.rps:>9,.0f} rps  "
            f"{lat}{rss}{cpu}  "
            f"other load {res.foreign_cpu_pct:.0f}% steal {res.steal_pct:.0f}%{flag}")
        if res.exit_code != 0 and res.requests == 0:
            log(f"  wrk failed (exit {res.exit_code}):\n{res.raw.strip()}")
        self._check_alive(slot, sc)

    def scenario(self, slots: list[Slot], sc: Scenario) -> None:
        """Warm up every live target, then run rounds until each has enough clean runs."""
        args = self.args
        if args.warmup > 0:
            for slot in slots:
                if not slot.failed:
                    self._wrk(slot, sc, args.warmup)
                    self._check_alive(slot, sc)
        max_runs = args.runs + args.noisy_retries

        def pending(slot: Slot) -> bool:
            runs = slot.runs.get(sc.name, [])
            clean = sum(not r.noisy for r in runs)
            return (not slot.failed and sc.name not in slot.unsupported
                    and clean < args.runs and len(runs) < max_runs)

        while todo := [s for s in slots if pending(s)]:
            for slot in todo:
                self._one(slot, sc)


def summarize(slot: Slot, sc: Scenario) -> dict[str, Any]:
    """The result entry of one target in one scenario: the median run by rps, over the runs
    not disturbed by other load when there are any."""
    runs = slot.runs.get(sc.name, [])
    if sc.name in slot.unsupported:
        return {"skipped": slot.unsupported[sc.name], "unsupported": True}
    if slot.failed and not runs:
        return {"skipped": slot.failed}
    if not runs:
        return {"skipped": "not measured"}
    if sc.path == "/16k" and any(r.requests and r.bytes < r.requests * 16384 for r in runs):
        log(f"WARNING: {slot.running.name} returned fewer than 16384 bytes per response")
    clean = [r for r in runs if not r.noisy]
    ordered = sorted(clean or runs, key=lambda r: r.rps)
    median = ordered[(len(ordered) - 1) // 2]
    entry: dict[str, Any] = {
        "median": median.to_dict() | {"raw": median.raw},
        "runs": [r.to_dict() | {"raw": ""} for r in runs],
        "clean_runs": len(clean),
        "rps_median_all_runs": sorted(r.rps for r in runs)[(len(runs) - 1) // 2],
        "rss_idle_mib": slot.idle_rss_mib,
        "rss_peak_mib": max(r.rss_peak_mib for r in runs) if slot.pid else None,
        "rps_per_cpu": median.rps_per_cpu or None,
        "flagged": any(not r.ok for r in runs),
    }
    if slot.failed:
        entry["failed"] = slot.failed
    return entry
