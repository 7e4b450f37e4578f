"""What several commands share: where the config, the pid file and the data dir are, and
loading a config with its errors printed."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bastion.config import ConfigError, LoadedConfig, load_config


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


def load(path: str | None) -> LoadedConfig | None:
    """The config at `path` (or the default one), or None with its errors printed."""
    path = path or default_config_path()
    try:
        return load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return None


def configured_data_dir(args: argparse.Namespace) -> tuple[bool, str | None]:
    """(False, None) when the config named (or the default one, if it exists) does not
    load (its errors are printed); else (True, its data_dir setting, None by default)."""
    if not (args.config or os.path.exists(default_config_path())):
        return True, None
    loaded = load(args.config)
    if loaded is None:
        return False, None
    return True, loaded.config.data_dir
