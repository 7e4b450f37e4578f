"""bastion service install: write a systemd unit that runs this bastion with a config
file, and print the commands that prepare the machine for it.

It never runs systemctl or useradd itself: what changes the system is shown, exactly, for
the operator to run (or put in their provisioning)."""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import re
import shlex
import sys
from pathlib import Path
from typing import TextIO

from bastion.cli.common import default_config_path, load
from bastion.cli.formatting import RawDescriptionHelpFormatter
from bastion.service_unit import ServicePlan, plan_service

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:-]{0,200}")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")

_DESCRIPTION = """\
Write a systemd unit that runs `bastion run -c CONFIG` as a dedicated user, with only the
capability to bind ports below 1024 and a sandbox around it, then print the commands to
create the user, enable and start the service, and read its logs. Nothing is run for you."""

_EPILOG = """\
examples:
  sudo bastion service install -c /etc/bastion/bastion.yaml
  bastion service install -c ./bastion.yaml --print > bastion.service
  sudo bastion service install -c /etc/bastion/api.yaml --name bastion-api --force

See docs/service.md."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("service", help="run bastion as a systemd service")
    actions = p.add_subparsers(dest="service_command", required=True)
    install = actions.add_parser(
        "install",
        help="write a systemd unit for a config file",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=RawDescriptionHelpFormatter,
    )
    install.add_argument(
        "-c",
        "--config",
        default=None,
        help="config file the service runs (default ./bastion.yaml or $BASTION_CONFIG); "
        "it must exist and be valid",
    )
    install.add_argument("--user", default="bastion", help="user the service runs as")
    install.add_argument(
        "--unit-dir",
        default="/etc/systemd/system",
        metavar="DIR",
        help="where to write the unit (default /etc/systemd/system)",
    )
    install.add_argument("--name", default="bastion", help="unit name, also of its state directory")
    install.add_argument(
        "--print",
        dest="print_only",
        action="store_true",
        help="print the unit on stdout and write nothing",
    )
    install.add_argument("--force", action="store_true", help="replace an existing unit")
    install.set_defaults(handler=cmd_install)


def _this_bastion() -> list[str]:
    """The command that starts this very bastion: the script installed next to this
    interpreter, else the interpreter with -m (the path is kept as is, not resolved: a
    virtualenv's python is a symlink that must stay one)."""
    python = Path(sys.executable).absolute()
    script = python.parent / "bastion"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [str(python), "-m", "bastion"]


def cmd_install(args: argparse.Namespace) -> int:
    name = args.name.removesuffix(".service")
    if not _NAME.fullmatch(name):
        print(f"--name {args.name!r}: expected letters, digits and - _ . @ :", file=sys.stderr)
        return 2
    if not _USER.fullmatch(args.user):
        print(f"--user {args.user!r}: expected a user name like bastion", file=sys.stderr)
        return 2
    config_path = Path(args.config or default_config_path()).expanduser().absolute()
    if not config_path.is_file():
        print(
            f"no config at {config_path}: give the one the service runs with -c PATH "
            "(`bastion check -c PATH` validates it)",
            file=sys.stderr,
        )
        return 1
    loaded = load(str(config_path))
    if loaded is None:
        print(
            "no unit written: fix the config first (the service would not start); "
            f"secrets it reads as ${{ENV}} go in /etc/{name}/{name}.env for the service",
            file=sys.stderr,
        )
        return 1
    user_exists, group = _account(args.user)
    plan = plan_service(loaded.config, config_path, _this_bastion(), args.user, group, name)
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.print_only:
        sys.stdout.write(plan.unit)
        _print_steps(plan, config_path, args.user, group, user_exists, name, None, sys.stderr)
        return 0
    unit_path = Path(args.unit_dir).expanduser().absolute() / f"{name}.service"
    written = _write_unit(unit_path, plan.unit, args.force)
    if written is not None:
        print(written, file=sys.stderr)
        return 1
    print(f"wrote {unit_path}")
    _print_steps(plan, config_path, args.user, group, user_exists, name, unit_path, sys.stdout)
    return 0


def _account(user: str) -> tuple[bool, str]:
    """Whether ``user`` exists, and the group the service runs as (its primary group;
    ``user`` itself for the one the printed useradd creates)."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return False, user
    try:
        return True, grp.getgrgid(entry.pw_gid).gr_name
    except KeyError:
        return True, str(entry.pw_gid)


def _write_unit(path: Path, text: str, force: bool) -> str | None:
    """Write the unit; None when done, else what went wrong and what to do."""
    if path.exists() and not force:
        return f"{path} exists: --force replaces it (--print shows the new one)"
    if not path.parent.is_dir():
        return f"no directory {path.parent}: give an existing one with --unit-dir"
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(text)
        temporary.chmod(0o644)
        temporary.replace(path)
    except PermissionError:
        temporary.unlink(missing_ok=True)
        return (
            f"cannot write {path}: permission denied. Run it with sudo, write it elsewhere "
            "with --unit-dir DIR, or print it with --print"
        )
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        return f"cannot write {path}: {exc.strerror or exc}"
    return None


def _print_steps(
    plan: ServicePlan,
    config_path: Path,
    user: str,
    group: str,
    user_exists: bool,
    name: str,
    unit_path: Path | None,
    out: TextIO,
) -> None:
    """The commands that remain, as root, in order (quoted for a shell)."""
    q = shlex.quote
    steps: list[str] = []
    systemd_dir = Path("/etc/systemd/system")
    if unit_path is None:
        steps.append(f"# save the unit above as {systemd_dir / (name + '.service')}")
    elif unit_path.parent != systemd_dir:
        steps.append(f"cp {q(str(unit_path))} {systemd_dir}/")
    if not user_exists:
        steps.append(
            f"useradd --system --user-group --home-dir {q(plan.data_dir)} --no-create-home "
            f"--shell /usr/sbin/nologin {user}"
        )
    if not _readable_by(config_path, group):
        steps.append(f"chgrp {group} {q(str(config_path))} && chmod 0640 {q(str(config_path))}")
    for directory in plan.writable:
        steps.append(f"install -d -o {user} -g {group} -m 0750 {q(directory)}")
    if plan.data_dir != f"/var/lib/{name}":
        steps.append(f"chown -R {user}:{group} {q(plan.data_dir)}")
    steps += [
        "systemctl daemon-reload",
        f"systemctl enable --now {name}",
        f"systemctl status {name}",
    ]
    lines = ["", "Next, as root:", *(f"  {step}" for step in steps), ""]
    lines += [
        f"Logs: journalctl -u {name} -f",
        f"After editing the config: systemctl reload {name}  (bastion check -c CONFIG first)",
        f"Certificates, keys, status: sudo -u {user} BASTION_DATA_DIR={q(plan.data_dir)} "
        f"{' '.join(q(w) for w in _this_bastion())} certs list",
        f"Files the config names (certificates, keys) must be readable by {user}.",
    ]
    print("\n".join(lines), file=out)


def _readable_by(path: Path, group: str) -> bool:
    """Whether the service's group (or everyone) may read ``path``, as far as its mode
    and group tell."""
    try:
        info = path.stat()
    except OSError:
        return False
    if info.st_mode & 0o004:
        return True
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return False
    return bool(info.st_mode & 0o040) and info.st_gid == gid
