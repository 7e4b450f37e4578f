"""bastion check and schema: validate a config file and print what it compiles to; print
the config's JSON Schema."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from bastion.cli.common import config_flag, data_dir_flag, load
from bastion.config import ConfigError, json_schema


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check", help="validate a config file and print the compiled plan")
    config_flag(p)
    data_dir_flag(p)
    p.set_defaults(handler=cmd_check)
    p = sub.add_parser("schema", help="print the JSON Schema of the config file")
    p.set_defaults(handler=cmd_schema)


def cmd_check(args: argparse.Namespace) -> int:
    loaded = load(args.config)
    if loaded is None:
        return 1
    from bastion.plan import compile_plan
    from bastion.proxy.pool import PoolRegistry
    from bastion.summary import describe

    loop = asyncio.new_event_loop()
    try:
        plan = compile_plan(loaded.config, PoolRegistry(loop), str(loaded.source or "<built-in>"))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"cannot prepare the certificates: {exc}", file=sys.stderr)
        return 1
    finally:
        loop.close()
    print(describe(loaded, plan))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return 0
