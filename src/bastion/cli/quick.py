"""bastion proxy: quick mode, one address proxied to one upstream without a config file."""

from __future__ import annotations

import argparse
import sys

from bastion.cli.serving import serve
from bastion.config import ConfigError, config_from_dict


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("proxy", help="quick mode: proxy one address to one upstream, no file")
    p.add_argument("--from", dest="from_", default="127.0.0.1:8080", help="listen address")
    p.add_argument("--to", required=True, help="upstream, e.g. http://127.0.0.1:8000")
    p.add_argument("--access-log", choices=["json", "combined", "off"], default="combined")
    p.set_defaults(handler=cmd_proxy)


def cmd_proxy(args: argparse.Namespace) -> int:
    try:
        loaded = config_from_dict(
            {
                "listen": {"http": args.from_},
                "access_log": {"format": args.access_log, "path": "stdout"},
                "sites": [
                    {"hosts": ["*"], "routes": [{"path": "/", "proxy": {"upstreams": [args.to]}}]}
                ],
            },
            source="<command line>",
        )
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return serve(loaded)
