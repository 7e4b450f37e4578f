"""bastion doctor: checks a deployment before the CA does, writing nothing.

Each module holds a family of checks, each a function of a ``DoctorContext`` (config,
resolver, /proc, clock, HTTP fetcher) that yields findings: PASS, WARN, FAIL or SKIP, with
what was found and what to do. ``CHECKS`` lists them in the order they are shown; the
runner runs the config check first, then the others at once.
"""

from __future__ import annotations

from bastion.doctor.acme_checks import check_budget, check_clock
from bastion.doctor.certs_check import check_certificates
from bastion.doctor.config_check import check_config
from bastion.doctor.context import DoctorContext
from bastion.doctor.dns_checks import check_caa, check_dns
from bastion.doctor.ports import check_backends, check_binding, check_private_listeners
from bastion.doctor.reach import check_reach
from bastion.doctor.render import as_json, as_text, summary_line
from bastion.doctor.result import Check, Finding, Status
from bastion.doctor.runner import Report, run_checks
from bastion.doctor.storage import check_data_dir, check_state
from bastion.doctor.unit import check_unit

__all__ = [
    "CHECKS",
    "Check",
    "DoctorContext",
    "Finding",
    "Report",
    "Status",
    "as_json",
    "as_text",
    "diagnose",
    "summary_line",
]

CHECKS = [
    Check("config", "the config loads and compiles", check_config, needs_config=False),
    Check("bind", "the listeners can be bound", check_binding),
    Check("dns", "ACME names resolve to this machine", check_dns, network=True),
    Check("reach", "the CA can reach the challenge port", check_reach, network=True),
    Check("caa", "CAA records allow the CA", check_caa, network=True),
    Check("budget", "certificates issued this week (rate limits)", check_budget),
    Check("data-dir", "a persistent, writable data dir", check_data_dir, needs_config=False),
    Check("clock", "the clock agrees with the CA's", check_clock, network=True),
    Check("backends", "backends listen on loopback only", check_backends),
    Check("certs", "certificates on disk are valid", check_certificates),
    Check("systemd", "the systemd unit", check_unit, needs_config=False),
    Check("private", "admin and metrics listeners are private", check_private_listeners),
    Check("redis", "shared state (Redis) is reachable", check_state),
]


def diagnose(ctx: DoctorContext, deadline: float = 10.0) -> Report:
    """Run every check against ``ctx``."""
    return run_checks(ctx, CHECKS, deadline)
