"""bastion doctor: says what will keep a deployment from working (ports, DNS, CAA, rate
limits, clock, data dir, certificates, exposed backends) before the CA does. Read-only."""

from __future__ import annotations

import argparse
from pathlib import Path

from bastion.cli.common import config_flag, data_dir_flag, default_config_path, default_pid_file


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "doctor",
        help="check a deployment (ports, DNS, CAA, rate limits, clock, data dir, "
        "certificates) before the CA does; changes nothing",
        description="Check a deployment before the CA does: each check answers PASS, WARN, "
        "FAIL or SKIP with what it found and what to do. Writes nothing (no data dir, no "
        "certificate). Exit code 1 when a check FAILs, else 0. See docs/doctor.md.",
    )
    config_flag(p)
    data_dir_flag(p)
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument("--offline", action="store_true", help="skip every check that needs the network")
    p.add_argument(
        "--unit",
        default=None,
        help="the systemd unit to check (default /etc/systemd/system/bastion.service)",
    )
    p.set_defaults(handler=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    from bastion.doctor import DoctorContext, as_json, as_text, diagnose
    from bastion.doctor.context import DEFAULT_UNIT

    ctx = DoctorContext(
        config_path=args.config or default_config_path(),
        data_dir_flag=args.data_dir,
        offline=args.offline,
        pid_files=(default_pid_file(),),
        unit_path=Path(args.unit) if args.unit else DEFAULT_UNIT,
    )
    report = diagnose(ctx)
    print(as_json(report) if args.json else as_text(report))
    return 1 if report.failed else 0
