"""Instructions per request of bastion's policy route, counted by callgrind.

Throughput on a small shared VM moves by 10-20% from run to run; instruction counts do not
(the same code, configuration and load give the same count within about 1%, whatever else
the machine runs). This script measures the cost of each policy of the `policy` scenario
separately and together, as user-space instructions per request:

    python bench/instructions.py [variant ...]

A variant is ``bare`` (the route without policies, no access log, every observability
feature off: statistics and trace context are on by default, so ``bare`` turns them off) or
a comma list of
``key`` (API key), ``rl`` (a rate limit of 1000000/s by consumer), ``rqh`` / ``rsh``
(request / response header rules), ``hdr`` (both), ``log`` (JSON access log), ``metrics``
(request metrics recorded for a ``metrics.listen`` listener), ``stats`` (the traffic
statistics), ``trace`` (W3C trace context sent upstream), ``observe`` (every observability
feature of `OBSERVE` on: what the "observability on" figure means), ``redis`` (the limits
counted in a redis-server started for the run, over its Unix socket: ``rl,redis`` against
``rl`` is what counting in Redis costs the gateway; Redis's own work is not counted). Each variant
starts bastion under ``valgrind --tool=callgrind`` with instrumentation off, warms it up
with wrk, then counts the instructions of one wrk run. Instructions are not time: they leave
out the kernel, cache misses and branch mispredictions, so a ratio here is an upper bound of
the throughput ratio that `run.py --scenarios policy` measures.

With ``--together`` the variants run at the same time (one callgrind each, on a machine
with a core per variant): paired figures under the same load, e.g.
``python bench/instructions.py --together bare observe``.

Before the counted run, ``--idle`` seconds (10: a multiple of the alert rule's period)
without requests are counted apart: the work a worker does once a second whatever its
traffic (the date line, the statistics' second, alerts, snapshots for other workers).
Under valgrind bastion serves a few hundred requests a second instead of tens of
thousands, so that work weighs some 50 times more per request than at a real rate. The
"net" figure is the loop's thread (where requests are served; the statistics' writer
and helper threads are shown apart, per second) less its idle rate times the counted
seconds. It still holds the per-second work that traffic causes (closing a busy second),
so it too grows as the rate falls: for the cost at a real rate, fit the per-request
figures of several runs as "a per request + b per second" over their rates (``--connections``
changes the rate; docs/benchmarks.md shows such a fit).

With ``--rounds N`` the measurement is repeated and the differences against ``bare`` are
the medians of the rounds' (each round's variants measured together with ``--together``):
on a busy machine one run's "net" difference moves by a point or two.

With ``--close`` every request comes on a new connection (the `newconn` scenario of
`run.py`): the figures then include what accepting, setting up and closing a client
connection costs.

With ``--h2`` the same variants are measured over HTTP/2 on TLS 1.3 (h2load, 16 connections
of 10 streams, a fixed number of requests): the HTTP/2 path has a cost of its own (framing,
HPACK, flow control, encryption), which the HTTP/1.1 figures do not show. With ``--https``
they are measured over HTTP/1.1 on TLS 1.3 (wrk, as the `https` scenario of `run.py`).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from statistics import linear_regression, median

import targets
import tlscert
from procs import free_port

PARTS = {
    "key": "        auth: {api_keys: {}}\n",
    "rl": "        rate_limits:\n          - {rate: 1000000/s, key: consumer}\n",
    "rqh": "        headers:\n          request:\n"
    '            set: {X-Client-IP: "{client_ip}"}\n            remove: [Cookie]\n',
    "rsh": "        headers:\n          response:\n"
    "            set: {X-Served-By: bastion}\n            remove: [X-Powered-By]\n",
    "hdr": "        headers:\n          request:\n"
    '            set: {X-Client-IP: "{client_ip}"}\n            remove: [Cookie]\n'
    "          response:\n"
    "            set: {X-Served-By: bastion}\n            remove: [X-Powered-By]\n",
}

# The observability features the ``observe`` variant turns on: top-level config keys and
# their values in YAML flow form; ``$PORT`` becomes a free port, ``$CLOSED`` a port nothing
# listens on, ``$TMP`` the run's directory. A feature of the observability work adds its key
# here. The alert rule is evaluated once a period, off the request path; its webhook points
# at a closed port (a firing rule's delivery fails without waiting for a timeout).
OBSERVE = {
    "metrics": "{listen: 127.0.0.1:$PORT}",
    "stats": "{enabled: true}",
    "tracing": "{traceparent: true}",
    "admin": '{listen: 127.0.0.1:$PORT, token: "${BENCH_ADMIN_TOKEN}"}',
    "alerts": "{channels: {hook: {webhook: {url: 'http://127.0.0.1:$CLOSED/alert'}}}, "
    "rules: {errors: {kind: error_rate, threshold: 0.05, period: 10s, channels: [hook]}}}",
}
# everything `OBSERVE` turns on, off (statistics and trace context are on by default): the
# ``bare`` figure and the base every variant adds its parts to
OBSERVE_OFF = {
    "stats": "{enabled: false}",
    "tracing": "{traceparent: false}",
}
# single features of `OBSERVE`, for the cost of each: variant part -> its keys
FEATURES = {"metrics": ("metrics",), "stats": ("stats",), "trace": ("tracing",)}
# the admin token of the ``observe`` variant, in bastion's environment (a ${ENV} secret)
ADMIN_TOKEN_ENV = {"BENCH_ADMIN_TOKEN": "bench-admin-token-0123456789abcdef"}


def _observe_config(tmp: Path, names: list[str]) -> str:
    """The top-level observability keys of a variant: `OBSERVE_OFF`, with the features the
    variant names (all of `OBSERVE` for ``observe``) turned on."""
    keys = dict(OBSERVE_OFF)
    if "observe" in names:
        keys.update(OBSERVE)
    for name in names:
        for key in FEATURES.get(name, ()):
            keys[key] = OBSERVE[key]
    return "".join(
        f"{key}: "
        + value.replace("$PORT", str(free_port()))
        .replace("$CLOSED", str(free_port()))
        .replace("$TMP", str(tmp))
        + "\n"
        for key, value in keys.items()
    )


REDIS: list[str] = []  # --redis: the state.redis URL of every variant (none: no Redis)


def config(
    tmp: Path, backend_port: int, port: int, variant: str, tls: tlscert.TlsFiles | None = None
) -> str:
    names = variant.split(",")
    known = ("bare", "log", "observe", "redis", *FEATURES)
    unknown = [n for n in names if n not in PARTS and n not in known]
    if unknown:
        raise SystemExit(f"unknown variant part(s): {', '.join(unknown)}")
    upstream = f"http://127.0.0.1:{backend_port}"
    log = (
        f'{{format: json, path: "{tmp}/access-{port}.log"}}'
        if "log" in names
        else '{format: "off"}'
    )
    policies = "".join(PARTS[n] for n in names if n in PARTS)
    listen = f"{{http: 127.0.0.1:{port}}}"
    site_tls = ""
    if tls is not None:
        listen = f"{{http: 127.0.0.1:{free_port()}, https: 127.0.0.1:{port}}}"
        site_tls = f'    tls: {{cert: "{tls.cert}", key: "{tls.key}"}}\n'
    observe = _observe_config(tmp, names)
    if "redis" in names:  # the limits counted in the run's own redis-server
        # a timeout of 1 s (as run.py's Redis targets), not the default 50 ms: under
        # callgrind a turn of the loop takes tens of milliseconds, and a check that the
        # watchdog gave up opens the breaker: its requests were counted in process, and
        # the figure was no longer the cost of counting in Redis
        observe += f'state: {{redis: "unix://{tmp}/redis/redis.sock", timeout: 1s}}\n'
    elif REDIS:  # API keys (and everything shared) in Redis: the key is created there
        observe += f'state: {{redis: "{REDIS[0]}"}}\n'
    return f"""\
listen: {listen}
{targets.H2_STREAM_CAP}{observe}workers: 1
data_dir: "{tmp}/data"
access_log: {log}
sites:
  - hosts: ["*"]
{site_tls}    routes:
      - path: "= {targets.POLICY_PATH}"
        proxy: {{upstreams: ["{upstream}"]}}
{policies}      - path: /
        proxy: {{upstreams: ["{upstream}"]}}
"""


def _wait_port(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"bastion did not open port {port} under valgrind")


def _listeners(config_text: str) -> list[int]:
    """The ports a variant's config listens on (the proxy's, metrics', admin's)."""
    found = re.findall(r"(?:listen: |http: |https: )127\.0\.0\.1:(\d+)", config_text)
    return [int(port) for port in found]


def _h2load(port: int, key: str, requests: int) -> int:
    """Requests that succeeded in one h2load run of ``requests``."""
    cmd = ["h2load", "-t1", "-c16", "-m10", f"-n{requests}", "-H", f"x-api-key: {key}",
           f"https://127.0.0.1:{port}{targets.POLICY_PATH}"]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", run.stdout)
    if found is None or int(found.group(1)) != requests:
        raise SystemExit(f"h2load failed or got errors:\n{run.stdout}{run.stderr}")
    return requests


def measure(
    python: Path,
    bastion: Path,
    tmp: Path,
    backend_port: int,
    variant: str,
    key: str,
    seconds: int,
    tls: tlscert.TlsFiles | None = None,
    idle: int = 0,
    connections: int = 16,
    close: bool = False,
    https: bool = False,
) -> Counted:
    """The instructions of one wrk run (h2load with ``tls``) against bastion running
    ``variant``, after ``idle`` seconds without requests counted apart (the work a worker
    does once a second whatever its traffic)."""
    port = free_port()
    cfg = tmp / f"{variant}.yaml"
    cfg.write_text(config(tmp, backend_port, port, variant, tls))
    out = tmp / f"callgrind-{variant}.out"
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
         f"--callgrind-out-file={out}",
         str(python), "-m", "bastion", "run", "-c", str(cfg)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp,
        env={**os.environ, **ADMIN_TOKEN_ENV},
    )  # fmt: skip
    try:
        # every listener of the variant (metrics, admin): they open after the proxy's
        # port, and what they import and set up must not fall into a counted window
        for listening in _listeners(cfg.read_text()):
            _wait_port(listening, 120)
        if tls is not None and not https:
            _h2load(port, key, 2000)  # warm-up
            subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], capture_output=True)
            requests = _h2load(port, key, 2000 * seconds)
        else:
            scheme = "https" if https else "http"
            wrk = ["wrk", "-t1", f"-c{connections}", "-H", f"X-API-Key: {key}",
                   *(("-H", "Connection: close") if close else ()),
                   f"{scheme}://127.0.0.1:{port}{targets.POLICY_PATH}"]  # fmt: skip
            subprocess.run([*wrk, "-d3s"], capture_output=True, check=True)  # warm-up
            subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], capture_output=True)
            if idle:
                time.sleep(idle)
                # a dump zeroes the counts: the idle seconds go to a file of their own
                subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True)
            requests = _wrk(wrk, seconds, variant)
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], capture_output=True)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    # one file per thread ("-01" is the loop's), the idle part's names with ".1"
    run = {f.name[len(out.name):]: _total(f) for f in tmp.glob(f"{out.name}*")}
    return Counted(
        requests,
        sum(n for part, n in run.items() if not part.startswith(".")),
        sum(n for part, n in run.items() if part.startswith(".")),
        run.get("-01", 0),
        run.get(".1-01", 0),
    )


@dataclass
class Counted:
    """A run's instructions: all threads, and the loop's thread alone (the request path
    runs there; the statistics' writer and helper threads only work once a second)."""

    requests: int
    total: int
    idle: int  # the idle seconds before the run
    loop: int
    loop_idle: int


def _wrk(wrk: list[str], seconds: int, variant: str) -> int:
    """Requests answered in one wrk run of ``seconds``."""
    run = subprocess.run([*wrk, f"-d{seconds}s"], capture_output=True, text=True, check=True)
    found = re.search(r"(\d+) requests in", run.stdout)
    if found is None or "Non-2xx" in run.stdout:
        raise SystemExit(f"{variant}: wrk failed or got errors:\n{run.stdout}")
    return int(found.group(1))


def _total(out: Path) -> int:
    """The instructions of one callgrind file (part). Its "totals:" line: after a dump,
    a part's "summary:" may have wrapped around (callgrind 3.19)."""
    found = {}
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            name, value = line.split()[:2]
            found[name] = int(value)
    return found.get("totals:", found.get("summary:", 0))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("variants", nargs="*", default=["bare", "key", "rl", "rqh", "rsh", "log",
                                                    "key,rl,hdr,log"])  # fmt: skip
    p.add_argument("--seconds", type=int, default=6, help="wrk seconds counted per variant (6)")
    p.add_argument(
        "--together",
        action="store_true",
        help="measure the variants at the same time (paired figures)",
    )
    over_tls = p.add_mutually_exclusive_group()
    over_tls.add_argument("--h2", action="store_true",
                          help="over HTTP/2 on TLS (h2load; --seconds x 2000 requests counted)")
    over_tls.add_argument("--https", action="store_true",
                          help="over HTTP/1.1 on TLS (wrk): what the encryption adds")
    p.add_argument("--close", action="store_true",
                   help="a new connection per request (wrk sends Connection: close): what "
                   "accepting, setting up and closing a client connection adds")
    p.add_argument("--idle", type=int, default=10, metavar="SECONDS",
                   help="seconds without requests counted apart before the wrk run "
                   "(the per-second work; 0: none)")
    p.add_argument("--connections", default="16",
                   help="wrk connections (16); fewer give a lower request rate, and the "
                   "per-request figures at two rates separate the per-second work; a comma "
                   "list (4,16,64) is taken in turn by the rounds")
    p.add_argument(
        "--bastion",
        type=Path,
        default=Path(sys.executable).parent / "bastion",
        help="bastion executable (default: the one beside this python)",
    )
    p.add_argument("--rounds", type=int, default=1,
                   help="measure this many times and give the medians against bare (the "
                   "figures of one run move by a point or two on a busy machine)")
    p.add_argument("--redis", metavar="URL", default=None,
                   help="state.redis for every variant (API keys in Redis; the key is "
                   "created there): the cost of a cluster's shared state")
    args = p.parse_args(argv)
    args.bastion = args.bastion.absolute()  # (bastion runs in the run's directory)
    if args.redis:
        REDIS.append(args.redis)
    python = args.bastion.parent / "python"
    tmp = Path(tempfile.mkdtemp(prefix="bastion-instructions-"))
    backend, backend_port = targets.start_backend(tmp, None)
    tls = tlscert.make(tmp) if args.h2 or args.https else None
    redis = None
    if any("redis" in variant.split(",") for variant in args.variants):
        import redis_targets

        redis, _, _ = redis_targets.start_redis(tmp / "redis", None)
    try:
        first = tmp / "keys.yaml"
        first.write_text(config(tmp, backend_port, free_port(), "key"))
        made = subprocess.run(
            [str(args.bastion), "keys", "create", "--consumer", "bench", "-c", str(first)],
            capture_output=True,
            text=True,
            check=True,
        )
        key = made.stdout.split()[0]
        # per round: variant -> (per request, net, requests a second)
        rounds: list[dict[str, tuple[float, float, float]]] = []
        connections = [int(n) for n in str(args.connections).split(",")]

        for number in range(args.rounds):
            clients = connections[number % len(connections)]
            if args.rounds > 1:
                print(f"round {number + 1} of {args.rounds} ({clients} connections)", flush=True)

            def one(variant: str, clients: int = clients) -> Counted:
                return measure(python, args.bastion, tmp, backend_port, variant, key,
                               args.seconds, tls, args.idle, clients, args.close,
                               args.https)  # fmt: skip

            rounds.append(_round(args, one))
    finally:
        backend.stop()
        if redis is not None:
            redis.stop()
    if all("bare" in counts for counts in rounds):
        print("\nagainst bare:            per request          net")
        if len(rounds) > 1:
            print("(medians of the rounds' differences; each round's variants measured in it)")
        for variant in rounds[0]:
            per = median((c[variant][0] - c["bare"][0]) for c in rounds)
            net = median((c[variant][1] - c["bare"][1]) for c in rounds)
            per_ratio = median((c[variant][0] / c["bare"][0] - 1) for c in rounds)
            net_ratio = median((c[variant][1] / c["bare"][1] - 1) for c in rounds)
            spread = ""
            if len(rounds) > 1:
                ratios = sorted(100 * (c[variant][1] / c["bare"][1] - 1) for c in rounds)
                spread = f"   (net {ratios[0]:+.1f}% to {ratios[-1]:+.1f}%)"
            print(
                f"{variant:16s} {per / 1000:+6.1f}k {100 * per_ratio:+5.1f}%  "
                f"{net / 1000:+6.1f}k {100 * net_ratio:+5.1f}%{spread}"
            )
        if len(rounds) >= 3:
            _print_fit(rounds)
    return 0


def _print_fit(rounds: list[dict[str, tuple[float, float, float]]]) -> None:
    """The "net" figures of every round fitted as ``a + b / rate`` per variant: ``a`` is
    the cost of a request where the work a busy second brings (counted in "net") is spread
    over a real rate's requests, ``b`` that work in instructions a second."""
    rates = [c[variant][2] for c in rounds for variant in c]
    if max(rates) < 1.5 * min(rates):
        print("(no fit: the rounds' rates are too close; run some with fewer --connections)")
        return
    fitted = {}
    for variant in rounds[0]:
        x = [1 / c[variant][2] for c in rounds]
        y = [c[variant][1] for c in rounds]
        try:
            b, a = linear_regression(x, y)
        except ValueError:  # (every round at the same rate)
            return
        fitted[variant] = a
        print(f"fitted {variant:9s} {a / 1000:7.1f} kIr/req + {b / 1000:7.0f} kIr/s over the rate")
    if "bare" in fitted:
        for variant, a in fitted.items():
            change = 100 * (a / fitted["bare"] - 1)
            print(f"fitted per request, {variant} against bare: {change:+.1f}%")


def _round(
    args: argparse.Namespace, one: Callable[[str], Counted]
) -> dict[str, tuple[float, float, float]]:
    """One measurement of every variant (at the same time with ``--together``), printed;
    variant -> (instructions per request, net, requests a second)."""
    if args.together:
        with ThreadPoolExecutor(len(args.variants)) as pool:
            results = list(zip(args.variants, pool.map(one, args.variants), strict=True))
    else:
        results = [(variant, one(variant)) for variant in args.variants]
    counts = {}
    for variant, c in results:
        # valgrind serves a few hundred requests a second, so the work done once a
        # second weighs ~50x more per request than at a real rate. "net": the loop's
        # thread less its idle rate times the counted seconds (what a request costs
        # where that work is negligible); the other threads' work per second is shown
        # apart (off the request path)
        idle = args.idle or 1
        per = c.total / c.requests
        net = (c.loop - c.loop_idle / idle * args.seconds) / c.requests
        others = (c.total - c.loop) / args.seconds
        counts[variant] = (per, net, c.requests / args.seconds)
        print(
            f"{variant:16s} {c.requests:7d} requests  {per / 1000:7.1f} kIr/req  "
            f"idle {c.idle / idle / 1000:7.1f} kIr/s  net {net / 1000:7.1f} kIr/req  "
            f"other threads {others / 1000:7.1f} kIr/s",
            flush=True,
        )
    return counts

if __name__ == "__main__":
    sys.exit(main())
