"""Commands on a running gateway or its data dir: status, trust, certs, cache purge, keys,
stats, alerts test."""

from __future__ import annotations

import argparse
import json
import sys

from bastion.cli.common import (
    config_flag,
    config_given_or_found,
    data_dir_flag,
    data_dir_of,
    load,
    operator_settings,
    pid_file_of,
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
    p.add_argument(
        "--path",
        action="store_true",
        help='print only the root certificate\'s path (curl --cacert "$(bastion trust --path)")',
    )
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
    p.add_argument(
        "--cluster",
        action="store_true",
        help="every instance's figures from Redis (state.redis; windows 5m, 1h, 24h)",
    )
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
    from bastion.state.stores import Stores

    ok, settings = operator_settings(args, asks_gateway=True)
    if not ok:
        return 1
    snapshots = Stores(data_dir_of(args, settings)).snapshots
    answer = admin_call(settings.admin if settings else None, "GET", "/api/upstreams")
    if answer:  # the running gateway's own view
        per_route = answer["pools"]
    else:
        try:
            instance: int | None = int(pid_file_of(settings).read_text().strip())
        except (OSError, ValueError):
            instance = None  # no pid file: show whatever live workers published
        per_route = status.merge(status.read(snapshots, instance))
    grouped = status.group(per_route)
    cluster = None
    if settings is not None and settings.state.redis is not None:
        # the instances sharing Redis, and whether their configs agree
        from bastion.state.instances import read_blocking, report

        cluster = read_blocking(settings.state)
    if args.json:
        print(json.dumps({**grouped, **({"cluster": cluster} if cluster else {})}, indent=2))
        return 0
    if cluster is not None:
        print(report(cluster) + "\n")
    if not grouped["pools"]:
        where = snapshots.where(status.TOPIC)
        print(f"no pool status found in {where}: is bastion running with this config?")
        return 1
    print(status.render(grouped))
    return 0


def cmd_trust(args: argparse.Namespace) -> int:
    from bastion.state.files import ensure_dir
    from bastion.tls.localca import LocalCA
    from bastion.tls.trust import trust_text

    ok, settings = operator_settings(args)
    if not ok:
        return 1
    try:
        ca = LocalCA(ensure_dir(data_dir_of(args, settings)))
        fingerprint = ca.root_fingerprint()
    except (OSError, ValueError) as exc:
        print(f"cannot open the local CA: {exc}", file=sys.stderr)
        return 1
    print(ca.root_cert_path if args.path else trust_text(ca.root_cert_path, fingerprint))
    return 0


def cmd_certs(args: argparse.Namespace) -> int:
    from bastion.acme.problems import AcmeError
    from bastion.acme.settings import issuer_for
    from bastion.config import ConfigError
    from bastion.config.partial import certs_config
    from bastion.server.admin.client import admin_call, cert_rows_from
    from bastion.tls.certs import acme_sites, cert_rows, format_rows

    ok, settings = operator_settings(args, asks_gateway=args.action == "list")
    if not ok:
        return 1
    path = config_given_or_found(args)
    if path is None:
        print(
            f"no config file: give one with -c (the certificates are its sites'); "
            f"{args.config or 'bastion.yaml'} does not exist here",
            file=sys.stderr,
        )
        return 1
    # listing reads the sites, listeners and the CA's directory; renewing and revoking talk
    # to the CA, so they read the whole acme section too (its EAB key, its DNS hook)
    try:
        config = certs_config(path, ordering=args.action != "list")
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    data_dir = data_dir_of(args, settings)
    if args.action == "list":
        answer = admin_call(settings.admin if settings else None, "GET", "/api/certificates")
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
    issuer = issuer_for(config, data_dir)
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
                print(
                    f"revoked {what} (serial {files.serial:x}) and removed it from the store; "
                    "running gateways obtain another within tls.watch_interval"
                )
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
    ok, settings = operator_settings(args, asks_gateway=True)
    if not ok:
        return 1
    data_dir = data_dir_of(args, settings)
    answer = admin_call(
        settings.admin if settings else None, "POST", "/api/cache/purge", {kind: value}
    )
    if answer:
        print(
            f"purged {kind} {value}: {answer['purged_here']} entries at once in the worker "
            "that answered; the other workers apply it within a second"
        )
        return 0
    stores = Stores(data_dir)
    if settings is not None:
        stores.use_state(settings.state)  # with state.redis: every instance's workers
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

    ok, settings = operator_settings(args)
    if not ok:
        return 1
    state = settings.state if settings is not None else None
    data_dir = str(data_dir_of(args, settings))
    return run_keys(args.action, args.consumer, args.key_id, data_dir, state)


def cmd_stats(args: argparse.Namespace) -> int:
    from bastion.observe.stats.report import run_stats

    if args.cluster:
        from bastion.observe.stats.cluster_report import run_cluster_stats

        loaded = load(args.config)
        if loaded is None:
            return 1
        return run_cluster_stats(loaded.config, args.since, args.json)
    ok, settings = operator_settings(args)
    if not ok:
        return 1
    return run_stats(data_dir_of(args, settings), args.since, args.json)


def cmd_alerts(args: argparse.Namespace) -> int:
    from bastion.observe.alerts.testsend import send_test

    loaded = load(args.config)
    if loaded is None:
        return 1
    return send_test(loaded.config.alerts, loaded.secrets, sys.stdout)
