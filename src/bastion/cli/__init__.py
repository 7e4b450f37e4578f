"""Command line: ``bastion run / check / proxy / demo / reload / status / certs / …``.

Each module of this package adds its commands to the parser (``register``) and names the
function that runs them (``handler``); ``main`` only dispatches."""

from __future__ import annotations

import argparse
import os
import sys
from importlib import import_module
from pathlib import Path
from typing import NoReturn

from bastion import __version__, build_kind
from bastion.cli.formatting import Parser
from bastion.observe.oplog import setup_logging
from bastion.state.files import DATA_DIR_ENV

# the modules of this package that register commands, in the order of `bastion --help`
MODULES = ("serving", "check", "quick", "demo", "operate", "doctor", "init", "service")
# the module that registers each command: `main` imports only the one of the command it
# runs, so a gateway does not hold the other commands' modules and what they import
COMMANDS = {
    "run": "serving",
    "reload": "serving",
    "check": "check",
    "schema": "check",
    "proxy": "quick",
    "demo": "demo",
    "status": "operate",
    "trust": "operate",
    "certs": "operate",
    "cache": "operate",
    "stats": "operate",
    "keys": "operate",
    "alerts": "operate",
    "doctor": "doctor",
    "init": "init",
    "service": "service",
}


class _Mistaken(Exception):
    """A command line that the parser of one command's module rejects: the whole parser
    parses it again, so the error and its usage line are the same as ever."""


class _OneModuleParser(Parser):
    def error(self, message: str) -> NoReturn:
        raise _Mistaken(message)


def build_parser(modules: tuple[str, ...] = MODULES) -> argparse.ArgumentParser:
    """The command line's parser, with the commands of ``modules`` (all by default)."""
    parser_class = Parser if modules == MODULES else _OneModuleParser
    parser = parser_class(prog="bastion", description="HTTPS reverse proxy and API gateway")
    parser.add_argument(
        "--version", action="version", version=f"bastion {__version__}, {build_kind()} build"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in modules:
        import_module(f"bastion.cli.{name}").register(sub)
    return parser


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line: through the parser of the command's module alone when it
    parses, else through the whole parser (`--help`, `--version`, mistakes)."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in COMMANDS:
        try:
            return build_parser((COMMANDS[args[0]],)).parse_args(args)
        except _Mistaken:
            pass
    return build_parser().parse_args(args)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
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
