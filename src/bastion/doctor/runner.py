"""Run the checks: the config first (most others need it), then the rest at once in a
thread pool, so that a dead network costs one timeout, not one per check."""

from __future__ import annotations

import concurrent.futures
import time
from dataclasses import dataclass, field
from pathlib import Path

from bastion.doctor.context import DoctorContext
from bastion.doctor.result import Check, Finding, Status, skip, warn

__all__ = ["Outcome", "Report", "run_checks"]

# the worst status of a check's findings is the check's status
_RANK = {Status.SKIP: 0, Status.PASS: 1, Status.WARN: 2, Status.FAIL: 3}


@dataclass(frozen=True)
class Outcome:
    check: Check
    findings: list[Finding]

    @property
    def status(self) -> Status:
        return max((f.status for f in self.findings), key=_RANK.__getitem__, default=Status.SKIP)


@dataclass
class Report:
    config_path: str
    data_dir: Path
    offline: bool
    outcomes: list[Outcome] = field(default_factory=list)

    def counts(self) -> dict[Status, int]:
        counts = dict.fromkeys(Status, 0)
        for outcome in self.outcomes:
            counts[outcome.status] += 1
        return counts

    @property
    def failed(self) -> bool:
        return any(outcome.status is Status.FAIL for outcome in self.outcomes)


def _run_one(check: Check, ctx: DoctorContext) -> list[Finding]:
    if check.needs_config and ctx.loaded is None:
        return [skip("the config does not load (see the config check)")]
    if check.network and ctx.offline:
        return [skip("--offline: no network check")]
    try:
        findings = list(check.run(ctx))
    except Exception as exc:  # a check that breaks must not hide the others' answers
        return [warn(f"the check could not run: {type(exc).__name__}: {exc}")]
    return findings or [skip("nothing to check")]


def run_checks(ctx: DoctorContext, checks: list[Check], deadline: float = 10.0) -> Report:
    """Every check's findings, in the order of ``checks``. The first check is the config's
    and runs alone; a check still running after ``deadline`` seconds is reported as such."""
    outcomes: dict[str, Outcome] = {}
    first, rest = checks[0], checks[1:]
    outcomes[first.id] = Outcome(first, _run_one(first, ctx))
    report = Report(ctx.config_path, ctx.data_dir, ctx.offline)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(len(rest), 1))
    try:
        futures = {pool.submit(_run_one, check, ctx): check for check in rest}
        end = time.monotonic() + deadline
        for future, check in futures.items():
            try:
                findings = future.result(timeout=max(end - time.monotonic(), 0))
            except concurrent.futures.TimeoutError:
                findings = [warn(f"no answer within {deadline:.0f} s (network or DNS hanging?)")]
            outcomes[check.id] = Outcome(check, findings)
    finally:
        # threads still blocked on a socket finish within their own timeouts
        pool.shutdown(wait=False, cancel_futures=True)
    report.outcomes = [outcomes[check.id] for check in checks]
    return report
