"""Commands on a running gateway or its data dir: status, trust, certs, cache purge, keys,
stats, alerts test."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bastion.cli.common import (
    config_flag,
    configured_data_dir,
    data_dir_flag,
    default_config_path,
    default_pid_file,
    load,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="show the upstream pools of the running instance")
    config_flag(p, "config whose data_dir and pid_file to use")
    p.add_argument("--json", action="store_true", help="print JSON")
    data_dir_flag(p)
    p.set_defaults(handler=cmd_status)
    p = sub.add_parser("trust", help="show the local CA root and how to install it")
    config_flag(p, "config whose data_dir to use (if it exists)")
    data_dir_flag(p)
    p.set_defaults(handler=cmd_trust)
    p = sub.add_parser("certs", help="list, renew or revoke the certificates of a config")
    p.add_argument("action", choices=["list", "renew", "revoke"])
    p.add_argument(
        "names",
        nargs="*",
        help="renew/revoke: any name of the site (default: all ACME sites for renew)",
    )
    config_flag(p)
    p.add_argument("--json", action="store_true", help="list: one JSON object per certificate")
    data_dir_flag(p)
    p.set_defaults(handler=cmd_certs)
    p = sub.add_parser("cache", help="purge cached responses in the running gateway")
    p.add_argument("action", choices=["purge"])
    p.add_argument("url", nargs="?", help="the URL to purge (every variant of it)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--prefix", help="a URL or path prefix ('/api/' on every host)")
    what.add_argument("--tag", help="a Surrogate-Key / Cache-Tag value")
    config_flag(p)
    data_dir_flag(p)
    p.set_defaults(handler=cmd_cache)
    p = sub.add_parser("stats", help="traffic statistics of a window, from the data dir")
    config_flag(p, "config whose data_dir to use")
    p.add_argument("--since", choices=["5m", "1h", "24h", "7d", "30d"], default="1h")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    data_dir_flag(p)
    p.set_defaults(handler=cmd_stats)
    p = sub.add_parser("keys", help="create, list or revoke API keys of consumers")
    p.add_argument(
        "action",
        choices=["create", "list", "revoke", "import"],
        help="import: copy the data dir's api_keys.json into Redis (with state.redis)",
    )
    p.add_argument("--consumer", default=None, help="consumer name (create, revoke, list)")
    p.add_argument("--id", dest="key_id", default=None, help="revoke: one key by its id")
    config_flag(p, "config whose data_dir to use")
    data_dir_flag(p)
    p.set_defaults(handler=cmd_keys)
    p = sub.add_parser("alerts", help="send a test notification on every alert channel")
    p.add_argument("action", choices=["test"])
    config_flag(p)
    p.set_defaults(handler=cmd_alerts)


def cmd_status(args: argparse.Namespace) -> int:
    from bastion.balance import status
    from bastion.server.admin.client import admin_call
    from bastion.state.files import resolve_data_dir
    from bastion.state.stores import Stores

    loaded = load(args.config)
    if loaded is None:
        return 1
    config = loaded.config
    pid_path = Path(config.pid_file) if config.pid_file else default_pid_file()
    try:
        instance: int | None = int(pid_path.read_text().strip())
    except (OSError, ValueError):
        instance = None  # no pid file: show whatever live workers published
    snapshots = Stores(resolve_data_dir(config.data_dir)).snapshots
    answer = admin_call(config, "GET", "/api/upstreams")  # the running gateway's own view
    pools = answer["pools"] if answer else status.merge(status.read(snapshots, instance))
    cluster = None
    if config.state.redis is not None:  # the instances sharing Redis, and their configs
        from bastion.state.instances import read_blocking, report

        cluster = read_blocking(config.state)
    if args.json:
        print(json.dumps({"pools": pools, **({"cluster": cluster} if cluster else {})}, indent=2))
        return 0
    if cluster is not None:
        print(report(cluster) + "\n")
    if not pools:
        where = snapshots.where(status.TOPIC)
        print(f"no pool status found in {where}: is bastion running with this config?")
        return 1
    print(status.render(pools))
    return 0


def cmd_trust(args: argparse.Namespace) -> int:
    from bastion.state.files import ensure_dir, resolve_data_dir
    from bastion.tls.localca import LocalCA
    from bastion.tls.trust import trust_text

    found, configured = configured_data_dir(args)
    if not found:
        return 1
    try:
        ca = LocalCA(ensure_dir(resolve_data_dir(configured)))
        fingerprint = ca.root_fingerprint()
    except (OSError, ValueError) as exc:
        print(f"cannot open the local CA: {exc}", file=sys.stderr)
        return 1
    print(trust_text(ca.root_cert_path, fingerprint))
    return 0


def cmd_certs(args: argparse.Namespace) -> int:
    from bastion.acme.problems import AcmeError
    from bastion.acme.settings import issuer_for
    from bastion.server.admin.client import admin_call, cert_rows_from
    from bastion.tls.certs import acme_sites, cert_rows, format_rows

    loaded = load(args.config)
    if loaded is None:
        return 1
    config = loaded.config
    if args.action == "list":
        answer = admin_call(config, "GET", "/api/certificates")
        rows = cert_rows_from(answer) if answer else cert_rows(config)
        if args.json:
            print(json.dumps([row.as_json() for row in rows], indent=2))
        else:
            print(format_rows(rows))
        return 0
    sites = acme_sites(config)
    wanted = {n.lower() for n in args.names}
    chosen = [s for s in sites if not wanted or wanted & {n.lower() for n in s}]
    if not chosen or (args.action == "revoke" and not wanted):
        known = "; ".join(", ".join(s) for s in sites) or "none"
        print(
            f"no ACME site matches {' '.join(args.names) or '(give a name)'}; ACME sites: {known}",
            file=sys.stderr,
        )
        return 2
    issuer = issuer_for(config)
    status = 0
    for names in chosen:
        what = ", ".join(names)
        try:
            if args.action == "renew":
                files = issuer.obtain(list(names), force=True)
                print(
                    f"renewed {what}: serial {files.serial:x}, valid until "
                    f"{files.not_after.isoformat(timespec='seconds')}; running gateways use "
                    "it within tls.watch_interval"
                )
            else:
                files = issuer.revoke(list(names))
                print(f"revoked {what} (serial {files.serial:x}) and removed it from the store")
        except AcmeError as exc:
            print(f"{args.action} {what} failed: {exc}. What to do: {exc.hint}", file=sys.stderr)
            status = 1
        except (OSError, ValueError) as exc:
            print(f"{args.action} {what} failed: {exc}", file=sys.stderr)
            status = 1
    return status


def cmd_cache(args: argparse.Namespace) -> int:
    from bastion.cache.purge import TOPIC, publish
    from bastion.server.admin.client import admin_call
    from bastion.state.files import resolve_data_dir
    from bastion.state.stores import Stores

    options = (("url", args.url), ("prefix", args.prefix), ("tag", args.tag))
    given = [(k, v) for k, v in options if v]
    if len(given) != 1:
        print("give exactly one of URL, --prefix P or --tag T", file=sys.stderr)
        return 2
    kind, value = given[0]
    if kind == "url" and "://" not in value:
        print(f"{value!r} is not a URL (expected http://host/path)", file=sys.stderr)
        return 2
    loaded = load(args.config)
    if loaded is None:
        return 1
    answer = admin_call(loaded.config, "POST", "/api/cache/purge", {kind: value})
    if answer:
        print(
            f"purged {kind} {value}: {answer['purged_here']} entries at once in the worker "
            "that answered; the other workers apply it within a second"
        )
        return 0
    stores = Stores(resolve_data_dir(loaded.config.data_dir))
    stores.use_state(loaded.config.state)  # with state.redis: every instance's workers
    broadcast = stores.broadcast
    try:
        publish(broadcast, kind, value)
    except OSError as exc:
        print(f"cannot queue the purge in {broadcast.where(TOPIC)}: {exc}", file=sys.stderr)
        return 1
    print(f"purge of {kind} {value} queued; every worker applies it within a second")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from bastion.policies.keycli import run_keys

    if not (args.config or os.path.exists(default_config_path())):
        return run_keys(args.action, args.consumer, args.key_id, None)
    loaded = load(args.config)
    if loaded is None:
        return 1
    config = loaded.config
    return run_keys(args.action, args.consumer, args.key_id, config.data_dir, config.state)


def cmd_stats(args: argparse.Namespace) -> int:
    from bastion.observe.stats.report import run_stats
    from bastion.state.files import resolve_data_dir

    found, configured = configured_data_dir(args)
    if not found:
        return 1
    return run_stats(resolve_data_dir(configured), args.since, args.json)


def cmd_alerts(args: argparse.Namespace) -> int:
    from bastion.observe.alerts.testsend import send_test

    loaded = load(args.config)
    if loaded is None:
        return 1
    return send_test(loaded.config.alerts, loaded.secrets, sys.stdout)
