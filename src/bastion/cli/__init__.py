"""Command line: ``bastion run / check / proxy / demo / reload / status / certs / …``.

Each module of this package adds its commands to the parser (``register``) and names the
function that runs them (``handler``); ``main`` only dispatches."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bastion import __version__, build_kind
from bastion.cli import check, demo, doctor, init, operate, quick, service, serving
from bastion.observe.oplog import setup_logging
from bastion.state.files import DATA_DIR_ENV

# the order of `bastion --help`
_MODULES = (serving, check, quick, demo, operate, doctor, init, service)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bastion", description="HTTPS reverse proxy and API gateway"
    )
    parser.add_argument(
        "--version", action="version", version=f"bastion {__version__}, {build_kind()} build"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in _MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "data_dir", None):
        # exported so that worker processes and reloads resolve the same directory
        os.environ[DATA_DIR_ENV] = str(Path(args.data_dir).expanduser().resolve())
    setup_logging("info")
    try:
        code: int = args.handler(args)
        return code
    except BrokenPipeError:
        # the reader went away (`bastion status --json | head`): what it did not read is
        # not an error of ours. stdout goes to /dev/null so that the interpreter's own
        # flush at exit does not fail on the closed pipe too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
