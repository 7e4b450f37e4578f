"""The systemd unit, when one is installed: does it start an existing bastion with this
config, and may it bind the low ports it is configured for."""

from __future__ import annotations

import os
import pwd
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import bastion.doctor.procfs as procfs
from bastion.doctor.facts import listeners
from bastion.doctor.result import Finding, fail, passed, skip, warn

if TYPE_CHECKING:
    from bastion.doctor.context import DoctorContext

__all__ = ["Unit", "check_unit", "read_unit"]

_CAP = "CAP_NET_BIND_SERVICE"


@dataclass
class Unit:
    path: Path
    values: dict[str, list[str]] = field(default_factory=dict)  # [Service] keys

    def last(self, key: str) -> str:
        return self.values.get(key, [""])[-1].strip()

    def user(self) -> str:
        return self.last("User") or "root"

    def caps(self, key: str) -> set[str]:
        words: set[str] = set()
        for value in self.values.get(key, []):
            if not value.strip():
                words.clear()  # an empty assignment resets the list
            words.update(w for w in value.split() if not w.startswith("~"))
        return words

    def environment(self) -> dict[str, str]:
        """The variables its ``Environment=`` lines set."""
        found: dict[str, str] = {}
        for value in self.values.get("Environment", []):
            try:
                words = shlex.split(value)
            except ValueError:
                continue
            for word in words:
                key, sep, setting = word.partition("=")
                if sep:
                    found[key] = setting
        return found

    def pid_file(self) -> Path | None:
        """Where bastion started by this unit writes its pid (unless the config says):
        ``$XDG_RUNTIME_DIR/bastion-UID.pid`` with the unit's runtime dir and user."""
        runtime = self.environment().get("XDG_RUNTIME_DIR")
        if not runtime:
            return None
        user = self.user()
        try:
            uid = int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid
        except KeyError:
            return None
        return Path(runtime) / f"bastion-{uid}.pid"

    def may_bind_low_ports(self) -> bool:
        bounding = self.values.get("CapabilityBoundingSet")
        if bounding is not None and _CAP not in self.caps("CapabilityBoundingSet"):
            return False
        return self.user() in ("root", "0") or _CAP in self.caps("AmbientCapabilities")


def read_unit(path: Path | None) -> Unit | None:
    """The [Service] section of a unit file, None when there is none."""
    if path is None:
        return None
    try:
        text = path.read_text()
    except OSError:
        return None
    unit = Unit(path)
    section, pending = "", ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line:
            key, _, value = line.partition("=")
            unit.values.setdefault(key.strip(), []).append(value)
    return unit


def _command(unit: Unit) -> list[str]:
    try:
        words = shlex.split(unit.last("ExecStart"))
    except ValueError:
        return []
    if words:
        words[0] = words[0].lstrip("-@+!:")
    return words


def _config_argument(words: list[str]) -> str | None:
    for index, word in enumerate(words):
        if word in ("-c", "--config") and index + 1 < len(words):
            return words[index + 1]
        if word.startswith("--config="):
            return word.partition("=")[2]
    return None


def check_unit(ctx: DoctorContext) -> Iterator[Finding]:
    unit = ctx.unit
    if unit is None:
        yield skip(f"no systemd unit at {ctx.unit_path}" if ctx.unit_path else "no unit given")
        return
    where = str(unit.path)
    words = _command(unit)
    if not words:
        yield fail(f"{where}: no ExecStart line", "bastion service install writes a full unit")
        return
    program = Path(words[0])
    if not (program.is_file() and os.access(program, os.X_OK)):
        yield fail(
            f"{where}: ExecStart runs {program}, which does not exist or is not executable",
            "point ExecStart at the installed bastion (command -v bastion), then "
            "systemctl daemon-reload",
        )
    elif not any("bastion" in w for w in words[:3]):
        yield warn(f"{where}: ExecStart runs {program}, which does not look like bastion")
    else:
        yield passed(f"{where}: ExecStart runs {program}")
    given = _config_argument(words)
    mine = Path(ctx.config_path).expanduser().resolve()
    if given is None:
        yield warn(
            f"{where}: ExecStart names no config (-c): bastion reads $BASTION_CONFIG or "
            "bastion.yaml in the unit's WorkingDirectory",
            f"add -c {mine} to ExecStart",
        )
    elif Path(given).expanduser().resolve() != mine:
        yield warn(
            f"{where}: the unit runs with -c {given}, not the config checked here ({mine})",
            f"run bastion doctor -c {given}, or change the unit",
        )
    else:
        yield passed(f"{where}: runs with this config")
    if ctx.loaded is None:
        return
    start = procfs.unprivileged_port_start(ctx.proc)
    low = sorted({ls.address.port for ls in listeners(ctx.config) if ls.address.port < start})
    if low and not unit.may_bind_low_ports():
        yield fail(
            f"{where}: runs as {unit.user()} without {_CAP}, but binds port "
            f"{', '.join(map(str, low))}",
            f"add AmbientCapabilities={_CAP} (and {_CAP} to CapabilityBoundingSet if the "
            "unit restricts it) to [Service], then systemctl daemon-reload",
        )
    elif low:
        yield passed(f"{where}: may bind port {', '.join(map(str, low))} (user {unit.user()})")
