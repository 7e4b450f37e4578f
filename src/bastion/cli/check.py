"""bastion check and schema: validate a config file and print what it compiles to; print
the config's JSON Schema."""

from __future__ import annotations

import argparse
import json
import sys

from bastion.cli.common import config_flag, data_dir_flag, load
from bastion.config import ConfigError, json_schema


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check",
        help="validate a config file and print the compiled plan",
        description="Validate a config file and print what it compiles to, as the gateway "
        "would at start, without side effects: no local CA or certificate is created and "
        "nothing is written to the data dir. OpenAPI documents given by URL are fetched "
        "(not with --offline).",
    )
    config_flag(p)
    p.add_argument(
        "--offline", action="store_true", help="fetch nothing (OpenAPI documents by URL)"
    )
    data_dir_flag(p)
    p.set_defaults(handler=cmd_check)
    p = sub.add_parser("schema", help="print the JSON Schema of the config file")
    p.set_defaults(handler=cmd_schema)


def cmd_check(args: argparse.Namespace) -> int:
    loaded = load(args.config)
    if loaded is None:
        return 1
    from bastion.plan.checking import compile_for_check
    from bastion.summary import describe

    try:
        plan = compile_for_check(loaded, offline=args.offline)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except OSError as exc:  # ssl.SSLError included: certificate files that do not load
        print(f"cannot load the certificates: {exc}", file=sys.stderr)
        return 1
    print(describe(loaded, plan))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return 0
