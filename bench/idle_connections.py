"""Memory held by idle client connections, and given back once they close.

Starts one bastion worker with an HTTPS and a plain-HTTP listener (a fixed `respond`
route: no backend), then, round after round, opens N idle connections of each kind
(TLS: the handshake done, no request; plain: connected, no request), samples the
worker's RSS, closes them all, waits for the worker to let them go, and samples again.
Prints RSS before / during / after per round and the KiB each connection holds.

Usage: python bench/idle_connections.py [--connections 10000] [--rounds 3]
       [--bastion-bin PATH] [--kinds tls,plain]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import ssl
import sys
import tempfile
import time
from pathlib import Path

import tlscert
from procs import free_port, process_tree, rss_kib, start, wait_ready

BENCH_DIR = Path(__file__).resolve().parent
# connections opened at once: enough to keep the worker busy, few enough that the
# listen backlog never overflows on a small machine
_PARALLEL = 200
# the worker trims its heap at most once in this many seconds (MIN_TRIM_WAIT in
# bastion/server/memory.py): a round's "after" is sampled once its trim may have run
# (the previous round's trim came within a few seconds of that round's close)
_TRIM_WAIT = 30.0 + 3.0


def _config(plain: int, https: int, tls: tlscert.TlsFiles, data_dir: Path, n: int) -> str:
    return f"""\
listen: {{http: 127.0.0.1:{plain}, https: 127.0.0.1:{https}}}
workers: 1
data_dir: "{data_dir}"
access_log: {{format: "off"}}
http2: {{enabled: false}}
limits: {{max_connections: {n + 100}}}
timeouts: {{header: 1h, keepalive: 1h}}
sites:
  - hosts: ["*"]
    tls: {{cert: "{tls.cert}", key: "{tls.key}"}}
    routes:
      - path: /
        respond: {{status: 200, body: "ok"}}
  - hosts: ["plain.test"]
    routes:
      - path: /
        respond: {{status: 200, body: "ok"}}
"""


async def _open(port: int, n: int, context: ssl.SSLContext | None) -> list[asyncio.StreamWriter]:
    writers: list[asyncio.StreamWriter] = []
    gate = asyncio.Semaphore(_PARALLEL)

    async def one() -> None:
        async with gate:
            _reader, writer = await asyncio.open_connection(
                "127.0.0.1",
                port,
                ssl=context,
                server_hostname="localhost" if context is not None else None,
            )
            writers.append(writer)

    await asyncio.gather(*(one() for _ in range(n)))
    return writers


async def _close(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.transport.abort()
    await asyncio.sleep(0)


def _rss(pid: int) -> int:
    """RSS (KiB) of bastion's processes (one worker: the process itself)."""
    return sum(rss_kib(p) for p in process_tree(pid))


def _settle(pid: int, seconds: float) -> int:
    """RSS (KiB) once it stops moving: the worker has let the closed connections go,
    and its once-a-second check has trimmed the heap (so at least 2.5 s)."""
    time.sleep(2.5)
    deadline = time.monotonic() + seconds
    last = _rss(pid)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = _rss(pid)
        if abs(now - last) < 256:
            return now
        last = now
    return last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kinds", default="tls,plain")
    parser.add_argument("--bastion-bin", default=f"{sys.executable} -m bastion")
    args = parser.parse_args()
    n = args.connections
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the worker inherits it
    if hard < n + 200:
        print(f"open-file limit {hard} is below {n + 200}: lower --connections", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bastion-idle-") as tmp_name:
        tmp = Path(tmp_name)
        tls = tlscert.make(tmp / "tls")
        plain_port, https_port = free_port(), free_port()
        cfg = tmp / "bastion.yaml"
        cfg.write_text(_config(plain_port, https_port, tls, tmp / "data", n))
        proc = start(
            "bastion", [*args.bastion_bin.split(), "run", "-c", str(cfg)], tmp / "stdout.log"
        )
        try:
            wait_ready(proc, https_port, get=lambda port, path: tlscert.https_get_ok(port, path))
            context = tlscert.client_context()
            time.sleep(1.0)
            start_kib = _settle(proc.pid, 5)
            print(f"bastion worker pid {proc.pid}, {n} connections per round")
            print(f"start: {start_kib / 1024:.1f} MiB")
            print("kind   round  before MiB  during MiB  after MiB  KiB/conn  after/start")
            last_closed = float("-inf")
            for kind in args.kinds.split(","):
                port = https_port if kind == "tls" else plain_port
                for round_no in range(1, args.rounds + 1):
                    before = _settle(proc.pid, 5)
                    during, count = asyncio.run(
                        _hold(port, n, context if kind == "tls" else None, proc.pid)
                    )
                    time.sleep(max(0.0, last_closed + _TRIM_WAIT - time.monotonic()))
                    last_closed = time.monotonic()
                    after = _settle(proc.pid, 15)
                    print(
                        f"{kind:6} {round_no:5}  {before / 1024:10.1f}  {during / 1024:10.1f}"
                        f"  {after / 1024:9.1f}  {(during - before) / max(count, 1):8.1f}"
                        f"  {after / start_kib:10.2f}"
                    )
        finally:
            proc.stop()
    return 0


async def _hold(
    port: int, n: int, context: ssl.SSLContext | None, pid: int
) -> tuple[int, int]:
    """Open `n` idle connections, sample the worker's RSS, close them; (RSS KiB, count)."""
    writers = await _open(port, n, context)
    await asyncio.sleep(1.0)
    during = _rss(pid)
    await _close(writers)
    return during, len(writers)


if __name__ == "__main__":
    sys.exit(main())
