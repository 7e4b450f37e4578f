"""What a check answers: a status and, for each thing it looked at, what it found and what to
do about it."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.doctor.context import DoctorContext

__all__ = ["Check", "Finding", "Status", "fail", "passed", "skip", "warn"]


class Status(enum.StrEnum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True, slots=True)
class Finding:
    """One answer of a check: ``found`` says what was seen, ``fix`` what to do (empty when
    there is nothing to do)."""

    status: Status
    found: str
    fix: str = ""


def passed(found: str) -> Finding:
    return Finding(Status.PASS, found)


def warn(found: str, fix: str = "") -> Finding:
    return Finding(Status.WARN, found, fix)


def fail(found: str, fix: str) -> Finding:
    return Finding(Status.FAIL, found, fix)


def skip(found: str) -> Finding:
    return Finding(Status.SKIP, found)


CheckFunction = Callable[["DoctorContext"], Iterable[Finding]]


@dataclass(frozen=True, slots=True)
class Check:
    """A family of checks: ``needs_config`` ones are skipped when the config does not load,
    ``network`` ones with ``--offline``."""

    id: str
    title: str
    run: CheckFunction
    needs_config: bool = True
    network: bool = False
