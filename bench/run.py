"""bastion benchmark: wrk against bastion, nginx, Caddy and HAProxy in front of one nginx origin.

Usage: python bench/run.py [--quick] [--targets none,nginx,...]
       [--scenarios small,16k,newconn,https,handshake,h2,cache-hit,observe,policy,
                    rl-redis,rl-redis-1c]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import h2load
import redis_targets
import report
import targets
import tlscert
import wrk
from measure import Measure, Scenario, Slot, get_ok, idle_rss, log, summarize
from procs import parse_cpus, wait_ready

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("small", "/", (), "keep-alive, 13-byte body"),
        Scenario("16k", "/16k", (), "keep-alive, 16 KiB body"),
        Scenario("newconn", "/", ("Connection: close",),
                 "new connection per request (Connection: close), 13-byte body"),
        Scenario("https", "/", (), "HTTPS keep-alive (TLS 1.3), 13-byte body", "https"),
        Scenario("handshake", "/", ("Connection: close",),
                 "HTTPS, new connection and full TLS 1.3 handshake per request", "https"),
        Scenario("h2", "/", (), "HTTP/2 over TLS 1.3 (h2load), 13-byte body", "h2"),
        Scenario("cache-hit", "/cached/", (),
                 "keep-alive cache hits (bastion cache: ttl 1h, nginx proxy_cache; "
                 "the others just proxy), 13-byte body"),
        Scenario("observe", "/", (),
                 "the bare proxy with every observability feature on (bastion-observe) vs "
                 "off (bastion), keep-alive, 13-byte body"),
        Scenario("policy", targets.POLICY_PATH, (),
                 "API route with API key + rate limit + header rules + JSON access log "
                 "(bastion-policy) vs the bare proxy (bastion), keep-alive, 13-byte body"),
        Scenario("rl-redis", "/", (),
                 "rate-limited route (never refuses), counted in Redis over TCP and the "
                 "Unix socket vs in process, keep-alive, 13-byte body"),
        Scenario("rl-redis-1c", "/", (),
                 "the rl-redis route with 1 connection: the latency counting adds to a "
                 "request when the gateway is not saturated", connections=1),
    )
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (10)")
    p.add_argument("--runs", type=int, default=3,
                   help="wrk runs per measurement (3); the median by rps is reported")
    p.add_argument("--warmup", type=float, default=2.0,
                   help="seconds of unrecorded wrk load before each measurement (2; 0 = none)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 3 s, 1 run, 1 s warm-up, 10 s quiet wait")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    p.add_argument("--h2-connections", type=int, default=16,
                   help="h2load connections in the h2 scenario (16)")
    p.add_argument("--h2-streams", type=int, default=10,
                   help="h2load concurrent streams per connection in the h2 scenario (10)")
    p.add_argument("--targets", default=",".join(targets.TARGETS),
                   help=f"comma list of {','.join(targets.TARGETS)}")
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help=f"comma list of {','.join(SCENARIOS)}")
    p.add_argument("--proxy-cpus", default="1", help="CPU list for the proxy under test (1)")
    p.add_argument("--load-cpus", default="0", help="CPU list for wrk and the backend (0)")
    p.add_argument("--noise-limit", type=float, default=20.0,
                   help="flag a run as noisy when other processes used more than this %% of "
                        "one CPU during it, CPU steal included (20); the median skips noisy runs")
    p.add_argument("--noisy-retries", type=int, default=None,
                   help="extra runs allowed to replace noisy ones (default: --runs)")
    p.add_argument("--quiet-wait", type=float, default=None,
                   help="before each run wait up to this many seconds for other load to drop "
                        "below half the noise limit (60, with --quick 10; 0 = don't wait)")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument("--bastion", default=targets.default_bastion_bin(),
                   help="bastion executable (default: the one beside this python)")
    p.add_argument("--markdown", action="store_true", help="also print markdown tables")
    p.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results",
                   help="where the JSON results go (bench/results)")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when a bastion headline check fails")
    p.add_argument("--render", type=Path, metavar="RESULTS_JSON",
                   help="measure nothing: print the tables of a saved results file")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    p.add_argument("--instruction-rounds", type=int, default=1,
                   help="with the observe scenario: paired callgrind rounds of bare and "
                        "observe (bench/instructions.py) for the 5%% budget; 0: none (1)")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.runs, args.warmup = 3.0, 1, 1.0
    if args.quiet_wait is None:
        # a smoke test on a busy machine should not spend minutes waiting for quiet
        args.quiet_wait = 10.0 if args.quick else 60.0
    if args.noisy_retries is None:
        args.noisy_retries = args.runs
    if args.runs < 1 or args.duration < 1:
        p.error("--runs and --duration must be >= 1")
    if os.sep in args.bastion:
        # the targets run in directories of their own: a path relative to here would
        # name nothing there
        args.bastion = os.path.abspath(args.bastion)
    args.target_list = _pick(p, args.targets, list(targets.TARGETS), "target")
    args.scenario_list = _pick(p, args.scenarios, list(SCENARIOS), "scenario")
    return args


def _pick(p: argparse.ArgumentParser, spec: str, known: list[str], kind: str) -> list[str]:
    wanted = [x.strip() for x in spec.split(",") if x.strip()]
    unknown = [x for x in wanted if x not in known]
    if unknown or not wanted:
        p.error(f"unknown {kind}(s) {unknown or spec!r}; choose from {','.join(known)}")
    return [x for x in known if x in wanted]  # canonical order


def pinning(args: argparse.Namespace, notes: list[str]) -> tuple[set[int] | None, set[int] | None]:
    available = os.sched_getaffinity(0)
    if args.no_pin:
        notes.append("pinning disabled (--no-pin): all processes share all CPUs")
        return None, None
    if len(available) < 2:
        notes.append(f"only {len(available)} CPU available: running unpinned")
        return None, None
    proxy, load = parse_cpus(args.proxy_cpus), parse_cpus(args.load_cpus)
    for name, cpus in (("--proxy-cpus", proxy), ("--load-cpus", load)):
        if not cpus <= available:
            raise SystemExit(f"{name} {sorted(cpus)} not within available CPUs {sorted(available)}")
    if proxy & load:
        notes.append(f"proxy CPUs {sorted(proxy)} overlap load CPUs {sorted(load)}")
    return proxy, load


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break

    def first_line(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        lines = (out.stdout + out.stderr).strip().splitlines()
        return lines[0].strip() if lines else ""

    return {
        "nproc": os.cpu_count(),
        "cpus_available": sorted(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": first_line(["wrk", "-v"]) if shutil.which("wrk") else "",
        "nginx": first_line(["nginx", "-v"]) if shutil.which("nginx") else "",
        "caddy": first_line(["caddy", "version"]) if shutil.which("caddy") else "",
        "haproxy": first_line(["haproxy", "-v"]) if shutil.which("haproxy") else "",
        "bastion_commit": first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "bastion_src_uncommitted": bool(first_line(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"])),
    }


def access_log_note(path: Path) -> str:
    """Confirm the JSON access log was really written during the bastion-json runs."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            first = f.readline().decode(errors="replace").strip()
    except OSError:
        return f"bastion-json: access log {path.name} was not created (logging inactive?)"
    if size == 0:
        return "bastion-json: access log is empty (logging inactive?)"
    try:
        json.loads(first)
        kind = "JSON lines"
    except ValueError:
        kind = "NOT JSON"
    return f"bastion-json: access log written, {size / 1e6:.1f} MB ({kind}); e.g. {first[:160]}"


def print_report(results: report.Results, titles: dict[str, str], notes: list[str],
                 method: str, markdown: bool,
                 extra: list[report.Check] | None = None) -> list[report.Check]:
    """Add the ratios to ``results``, print the tables and return bastion's checks
    (``extra``: checks measured apart, printed with the policy and observability ones)."""
    report.add_ratios(results)
    has_bastion = any(t.startswith("bastion") for e in results.values() for t in e)
    checks = report.checks(results) if has_bastion else []
    tls = report.tls_checks(results) if has_bastion else []
    policy = report.policy_checks(results) if has_bastion else []
    policy += report.observe_checks(results) if has_bastion else []
    policy += report.rl_redis_checks(results) if has_bastion else []
    policy += extra or []
    if not any(
        name not in (*report.TLS_SCENARIOS, *report.RL_SCENARIOS, "policy", "observe", "cache-hit")
        for name in results
    ):
        checks = []  # the plain-HTTP checks need the plain scenarios
    print()
    for name, title in titles.items():
        print(report.table(title, results[name], markdown=False))
    if checks:
        print("bastion headline checks (vs nginx, small keep-alive):")
        print(report.checks_text(checks, markdown=False))
    if tls:
        print("bastion over HTTPS (targets vs nginx; ratios to nginx and Caddy):")
        print(report.tls_checks_text(tls, markdown=False))
    cache = report.cache_checks(results) if "cache-hit" in results else []
    if cache:
        print("bastion cache hits (vs nginx proxy_cache and bastion's own uncached proxying):")
        print(report.checks_text(cache, markdown=False))
    if policy:
        print("bastion with API gateway policies or observability (same run):")
        print(report.checks_text(policy, markdown=False))
    for note in notes:
        print(f"note: {note}")
    print(f"method: {method}")
    if markdown:
        print("\n<!-- markdown -->\n")
        for name, title in titles.items():
            print(report.table(title, results[name], markdown=True))
        if checks:
            print(report.checks_text(checks, markdown=True))
        if tls:
            print(report.tls_checks_text(tls, markdown=True))
        if cache:
            print(report.checks_text(cache, markdown=True))
        if policy:
            print(report.checks_text(policy, markdown=True))
    return checks + tls + cache + policy


def render(path: Path, markdown: bool) -> int:
    """Print the report of a saved results file again (with this version's formatting)."""
    payload = json.loads(path.read_text())
    titles = {name: f"{name}: {sc['description']}" for name, sc in payload["scenarios"].items()}
    print(f"results of {payload['timestamp']} (bastion {payload['machine']['bastion_commit']})")
    extra = [report.Check(**c) for c in payload.get("instruction_checks", [])]
    print_report(payload["results"], titles, payload["notes"], payload["method"], markdown,
                 extra)
    return 0


def observe_instructions(args: argparse.Namespace) -> list[report.Check]:
    """The observability budget in instructions per request: `instructions.py`'s paired
    callgrind runs of the bare proxy with every observability feature off and on, its
    "net" figures (the loop's thread less its idle rate). Throughput moves by more than
    5% between runs on a shared machine; instruction counts do not."""
    name = (f"every observability feature on: instructions per request <= "
            f"{1 + report.OBSERVE_INSTRUCTIONS_MAX:.2f}x off (callgrind, net)")
    if shutil.which("valgrind") is None:
        return [report.Check(name, "SKIP", "valgrind not installed (apt-get install valgrind)")]
    log(f"observe: instructions per request, {args.instruction_rounds} paired callgrind "
        "round(s) of bare and observe")
    done = subprocess.run(
        [sys.executable, str(BENCH_DIR / "instructions.py"), "--bastion", str(args.bastion),
         "--together", "--rounds", str(args.instruction_rounds), "bare", "observe"],
        capture_output=True, text=True, check=False,
    )
    net = report.parse_instructions(done.stdout)
    if done.returncode or net is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return [report.Check(name, "SKIP", f"instructions.py failed: {tail[0][:160]}")]
    off, on, change = net
    ok = change <= report.OBSERVE_INSTRUCTIONS_MAX
    detail = (f"{change * 100:+.1f}% ({on / 1000:.1f} k against {off / 1000:.1f} k a request, "
              f"{bastion_build(args.bastion)})")
    return [report.Check(name, "PASS" if ok else "FAIL", detail)]


def bastion_build(bastion: Path) -> str:
    """Which build ``bastion`` is ("compiled (mypyc) build" or "pure Python build")."""
    done = subprocess.run([str(bastion), "--version"], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip().partition(", ")[2] or "build unknown"


def start_slots(env: targets.Env, names: list[str], tls: bool, skipped: dict[str, str],
                versions: dict[str, str]) -> list[Slot]:
    """Start the plain (or the HTTPS) instance of each named target and wait until it
    answers; targets that are missing or fail to start are recorded, not fatal."""
    slots: list[Slot] = []
    for name in names:
        target = targets.TARGETS[name]
        starter = target.tls_starter if tls else target.starter
        label = f"{name} (HTTPS)" if tls else name
        missing = targets.missing_binary(target, env.bastion_bin)
        if missing or starter is None:
            skipped[name] = f"skipped: {missing} not installed" if missing else "skipped"
            log(f"{label}: {skipped[name]}")
            continue
        log(f"starting {label}: {target.description}")
        try:
            running = starter(env)
        except OSError as exc:
            skipped[name] = f"failed: could not start: {exc}"
            log(f"{label} {skipped[name]}")
            continue
        slot = Slot(running)
        slots.append(slot)
        try:
            if running.proc is not None:
                wait_ready(running.proc, running.port, get=get_ok(running))
        except RuntimeError as exc:
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            reason = f"failed: {lines[0].rstrip(':')}" if lines else "failed"
            if len(lines) > 1:
                reason += f" ({lines[-1][:100]})"
            slot.failed = reason
            log(f"{label} {reason}\n{exc}")
            running.stop()
            continue
        versions[name] = running.version
    return slots


def in_scenario(target: str, scenario: str) -> bool:
    """The policy and observe scenarios compare a bastion with features with the bare
    bastion only, the rl-redis ones the rate-limited targets among themselves, and
    bastion-policy, bastion-observe and the rate-limited targets run in no other scenario."""
    if scenario == "policy":
        return target in report.POLICY_PAIR
    if scenario == "observe":
        return target in report.OBSERVE_PAIR
    if scenario in report.RL_SCENARIOS:
        return target in report.RL_TARGETS
    return target not in ("bastion-policy", "bastion-observe", *report.RL_TARGETS)


def _raise_interrupt(signum: int, _frame: object) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        return render(args.render, args.markdown)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found (apt-get install -y wrk)")
    if shutil.which("nginx") is None:
        raise SystemExit("nginx not found: it is the backend (apt-get install -y nginx)")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)

    notes: list[str] = []
    proxy_cpus, load_cpus = pinning(args, notes)
    if "h2" in args.scenario_list and not h2load.available():
        args.scenario_list.remove("h2")
        if not args.scenario_list:
            raise SystemExit(h2load.MISSING)
        log(h2load.MISSING)
        notes.append(h2load.MISSING)
    scenarios = [SCENARIOS[s] for s in args.scenario_list]
    results: report.Results = {s.name: {} for s in scenarios}
    versions: dict[str, str] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bastion-bench-"))
    backend = None
    slots: list[Slot] = []
    skipped: dict[str, str] = {}
    tls_skipped: dict[str, str] = {}
    interrupted = False
    try:
        lua = wrk.write_lua(tmp)
        backend, backend_port = targets.start_backend(tmp, load_cpus)
        log(f"backend nginx on 127.0.0.1:{backend_port} (pid {backend.pid}); "
            f"proxy CPUs {sorted(proxy_cpus) if proxy_cpus else 'any'}, "
            f"wrk+backend CPUs {sorted(load_cpus) if load_cpus else 'any'}")
        env = targets.Env(tmp=tmp, backend_port=backend_port, proxy_cpus=proxy_cpus,
                          bastion_bin=args.bastion, load_cpus=load_cpus)
        kinds = {sc.tls for sc in scenarios}
        if False in kinds:
            slots += start_slots(env, args.target_list, False, skipped, versions)
        if True in kinds:
            env.tls = tlscert.make(tmp / "tls")
            tls_targets = [n for n in args.target_list if targets.TARGETS[n].tls_starter]
            tls_slots = start_slots(env, tls_targets, True, tls_skipped, versions)
            slots += tls_slots
            for slot in tls_slots:
                if not slot.failed:
                    notes.append(f"{slot.running.name} HTTPS negotiated: "
                                 f"{tlscert.probe(slot.running.port)}")
        for slot in slots:
            if not slot.failed:
                idle_rss(slot)
        measure = Measure(args, lua, load_cpus, backend.pid)
        for sc in scenarios:
            log(f"scenario {sc.name}: {sc.description}")
            if sc.name == "policy":
                sc = dataclasses.replace(sc, headers=env.policy_headers)
            measure.scenario([s for s in slots if s.running.tls == sc.tls
                              and in_scenario(s.running.name, sc.name)], sc)
        for slot in slots:
            if slot.running.name == "bastion-json" and slot.runs:
                notes.append(access_log_note(tmp / "bastion-json" / "access.log"))
            if slot.running.name.startswith("bastion-rl-redis") and slot.runs:
                notes.append(redis_targets.fallback_note(slot.running))
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping everything")
    finally:
        for slot in slots:
            slot.running.stop()
        if backend is not None:
            backend.stop()
        if args.keep_tmp:
            log(f"kept temp dir {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if interrupted:
        return 130

    for tls in (False, True):
        by_name = {s.running.name: s for s in slots if s.running.tls == tls}
        why = tls_skipped if tls else skipped
        kind_scenarios = [sc for sc in scenarios if sc.tls == tls]
        # the HTTPS scenarios list only the targets that have an HTTPS instance
        names = [n for n in args.target_list if not tls or targets.TARGETS[n].tls_starter]
        for name in names if kind_scenarios else []:
            found = by_name.get(name)
            label = f"{name} (HTTPS)" if tls else name
            if found is not None and found.failed:
                notes.append(f"{label} {found.failed}")
            elif name in why:
                notes.append(f"{label} {why[name]}")
            for sc in kind_scenarios:
                if not in_scenario(name, sc.name):
                    continue
                results[sc.name][name] = (summarize(found, sc) if found is not None
                                          else {"skipped": why.get(name, "skipped")})

    method = (f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s --latency, "
              f"{args.runs} run(s) per target interleaved round-robin, median by rps, "
              f"{args.warmup:g}s warm-up; h2: h2load -t1 -c{args.h2_connections} "
              f"-m{args.h2_streams}; "
              f"proxy on CPU {sorted(proxy_cpus) if proxy_cpus else 'any'}, "
              f"wrk + backend on CPU {sorted(load_cpus) if load_cpus else 'any'}")
    titles = {sc.name: f"{sc.name}: {sc.description}" for sc in scenarios}
    # after the throughput runs, with every target stopped: callgrind wants the cores
    instruction_checks = (observe_instructions(args)
                          if "observe" in args.scenario_list and args.instruction_rounds > 0
                          else [])
    checks = print_report(results, titles, notes, method, args.markdown, instruction_checks)

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out_path = args.results_dir / f"{stamp}.json"
    payload = {
        "timestamp": stamp,
        "machine": machine_info(),
        "versions": versions,
        "method": method,
        "params": {k: v for k, v in vars(args).items() if k not in ("results_dir",)},
        "notes": notes,
        "scenarios": {s.name: {"path": s.path, "headers": list(s.headers),
                               "description": s.description} for s in scenarios},
        "results": results,
        "checks": [c.to_dict() for c in checks],
        "instruction_checks": [c.to_dict() for c in instruction_checks],
    }
    out_path.write_text(json.dumps(payload, indent=2, default=str))
    print(f"results written to {out_path}")
    if args.strict and any(c.status == "FAIL" for c in checks):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
