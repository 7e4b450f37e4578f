"""What several commands share: where the config, the pid file and the data dir are, and
loading a config with its errors printed."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bastion.config import ConfigError, LoadedConfig
from bastion.state.files import DATA_DIR_ENV, resolve_data_dir

if TYPE_CHECKING:
    from bastion.config.partial import OperatorSettings


def default_config_path() -> str:
    return os.environ.get("BASTION_CONFIG", "bastion.yaml")


def default_pid_file() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime else Path("/tmp")
    return base / f"bastion-{os.getuid()}.pid"


def config_flag(parser: argparse.ArgumentParser, what: str | None = None) -> None:
    parser.add_argument(
        "-c",
        "--config",
        default=None,
        help=what or "config file (default ./bastion.yaml or $BASTION_CONFIG)",
    )


def data_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        default=None,
        help="where the local CA and certificates live (default $BASTION_DATA_DIR, the "
        "config's data_dir, /var/lib/bastion for root, else ~/.local/share/bastion)",
    )


def load(path: str | None, apart: bool = False) -> LoadedConfig | None:
    """The config at `path` (or the default one), or None with its errors printed.

    ``apart``: validated by a child process and handed over as plain objects
    (``bastion.config.handoff``), for a process that serves and should not hold pydantic."""
    path = path or default_config_path()
    try:
        if apart:
            from bastion.config.handoff import load_config_apart

            return load_config_apart(path)
        from bastion.config.loader import load_config

        return load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return None
    except OSError as exc:  # apart: no process could be started to validate it
        print(f"{path}: the config could not be validated: {exc}", file=sys.stderr)
        return None


def config_given_or_found(args: argparse.Namespace) -> str | None:
    """The config file a command reads: the one named, else ./bastion.yaml (or
    $BASTION_CONFIG) when it exists; None when there is none (defaults then apply)."""
    if args.config:
        return str(args.config)
    path = default_config_path()
    return path if os.path.exists(path) else None


def operator_settings(
    args: argparse.Namespace, asks_gateway: bool = False
) -> tuple[bool, OperatorSettings | None]:
    """(False, None) when the config does not load (its errors are printed); else (True, the
    settings operator commands need, or None when there is no config file).

    Only the data dir, the pid file and the admin section are read (``config.partial``): a
    secret elsewhere in the file that this shell does not have does not matter. For a command
    that ``asks_gateway`` through its admin API, a problem under ``admin`` (its token's
    variable not set here) is printed as a warning: it then works from the data dir."""
    from bastion.config.partial import operator_settings as read_settings

    path = config_given_or_found(args)
    if path is None:
        return True, None
    try:
        settings = read_settings(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return False, None
    for issue in settings.admin_problems if asks_gateway else []:
        print(
            f"{issue}: the running gateway's admin API is not asked; using the data dir",
            file=sys.stderr,
        )
    return True, settings


def data_dir_of(args: argparse.Namespace, settings: OperatorSettings | None) -> Path:
    """The data dir the command uses, said on stderr with where it comes from (stdout stays
    for the command's answer: `--json` output remains parseable)."""
    configured = settings.data_dir if settings is not None else None
    path = resolve_data_dir(configured)
    if getattr(args, "data_dir", None):
        why = "--data-dir"
    elif os.environ.get(DATA_DIR_ENV):
        why = f"${DATA_DIR_ENV}"
    elif configured:
        why = f"from the data_dir of {settings.source if settings else 'the config'}"
    else:
        who = "root" if os.geteuid() == 0 else "a user other than root"
        where = (
            f"{settings.source} sets no data_dir"
            if settings is not None
            else f"no config file: {default_config_path()} does not exist here"
        )
        why = f"default for {who}; {where}"
    print(f"data dir: {path} ({why})", file=sys.stderr)
    return path


def pid_file_of(settings: OperatorSettings | None) -> Path:
    if settings is not None and settings.pid_file:
        return Path(settings.pid_file)
    return default_pid_file()
