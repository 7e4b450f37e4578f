"""The loop both fuzzers share: start a recording backend and bastion, run cases in
batches, feed what the backend saw to the oracles, probe liveness between batches."""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from fuzzlib import Oracles
from processes import Bastion, RecordingBackend, bad_log_lines

RunCase = Callable[[int, int, Bastion, Oracles, bool], object]  # what it returns is unused
Probe = Callable[[Bastion, Oracles, random.Random, int], None]


def run_fuzzer(name: str, description: str | None, batch: int, https: bool,
               run_case: RunCase, probe: Probe) -> int:  # fmt: skip
    """The exit status: 1 when there was any finding."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--case", type=int, default=None, help="replay one case, verbosely")
    parser.add_argument("--batch", type=int, default=batch)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    print(f"{name} fuzz: seed={seed}", flush=True)
    backend = RecordingBackend()
    gw = Bastion(backend.port, https=https)
    gw.start()
    oracles = Oracles(seed, gw.key)
    oracles.log_path = gw.dir / "findings.jsonl"
    probe_rng = random.Random(f"probe:{seed}")
    started = time.monotonic()
    single = args.case is not None
    case = args.case if single else 0
    connections = 0
    try:
        while True:
            for _ in range(1 if single else args.batch):
                run_case(case, seed, gw, oracles, single)
                connections += 1
                if bad := bad_log_lines(gw.new_log()):
                    oracles.add("log-error", case, " | ".join(bad))
                case += 1
            time.sleep(0.05)
            for seen in backend.take_new():
                oracles.backend_saw(seen)
            if not gw.alive():
                code = gw.proc.returncode if gw.proc else None
                oracles.add("died", case - 1, f"bastion exited with {code}")
                break
            probe(gw, oracles, probe_rng, case - 1)
            if single or time.monotonic() - started > args.seconds:
                break
        time.sleep(0.3)
        for seen in backend.take_new():
            oracles.backend_saw(seen)
        if bad := bad_log_lines(gw.new_log()):
            oracles.add("log-error", case - 1, " | ".join(bad))
    finally:
        gw.stop()
        backend.stop()
    print(oracles.summary(time.monotonic() - started, connections))
    print(f"(bastion files in {gw.dir})")
    return 1 if oracles.findings else 0
