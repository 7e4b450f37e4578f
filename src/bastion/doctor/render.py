"""The report as text for people (one line per finding, its fix below it) and as JSON for
machines."""

from __future__ import annotations

import json
from typing import Any

from bastion.doctor.result import Status
from bastion.doctor.runner import Report

__all__ = ["as_json", "as_text", "summary_line"]

_ORDER = (Status.PASS, Status.WARN, Status.FAIL, Status.SKIP)


def summary_line(report: Report) -> str:
    """``7 PASS, 1 WARN, 2 SKIP``: the checks by their worst finding."""
    counts = report.counts()
    text = ", ".join(f"{counts[s]} {s}" for s in _ORDER if counts[s])
    return text + (" (offline)" if report.offline else "")


def as_text(report: Report, *, skipped: bool = True) -> str:
    width = max((len(o.check.id) for o in report.outcomes), default=6)
    lines = [
        f"bastion doctor: config {report.config_path}, data dir {report.data_dir}",
        "",
    ]
    for outcome in report.outcomes:
        for finding in outcome.findings:
            if finding.status is Status.SKIP and not skipped:
                continue
            head = f"{finding.status:<4}  {outcome.check.id:<{width}}  "
            pad = " " * len(head)
            found = finding.found.splitlines() or [""]
            lines.append(head + found[0])
            lines.extend(pad + line for line in found[1:])
            if finding.fix:
                fix = finding.fix.splitlines()
                lines.append(pad + "fix: " + fix[0])
                lines.extend(pad + "     " + line for line in fix[1:])
    verdict = "FAIL: fix what says FAIL before deploying" if report.failed else "no failure"
    lines += ["", f"{summary_line(report)} — {verdict}"]
    return "\n".join(lines)


def as_json(report: Report) -> str:
    document: dict[str, Any] = {
        "verdict": "fail" if report.failed else "ok",
        "config": report.config_path,
        "data_dir": str(report.data_dir),
        "offline": report.offline,
        "counts": {str(s): n for s, n in report.counts().items()},
        "checks": [
            {
                "id": outcome.check.id,
                "title": outcome.check.title,
                "status": str(outcome.status),
                "findings": [
                    {"status": str(f.status), "found": f.found, "fix": f.fix}
                    for f in outcome.findings
                ],
            }
            for outcome in report.outcomes
        ],
    }
    return json.dumps(document, indent=2)
