"""Command line: bastion run / check / proxy / demo / reload / schema."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

from bastion import __version__
from bastion.config import ConfigError, LoadedConfig, config_from_dict, json_schema, load_config
from bastion.observe.oplog import setup_logging
from bastion.state.files import DATA_DIR_ENV

log = logging.getLogger("bastion")


def default_config_path() -> str:
    return os.environ.get("BASTION_CONFIG", "bastion.yaml")


def default_pid_file() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime else Path("/tmp")
    return base / f"bastion-{os.getuid()}.pid"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bastion", description="HTTPS reverse proxy and API gateway"
    )
    parser.add_argument("--version", action="version", version=f"bastion {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="serve with a config file")
    p.add_argument(
        "-c",
        "--config",
        default=None,
        help="config file (default ./bastion.yaml or $BASTION_CONFIG)",
    )
    _data_dir_flag(p)
    p = sub.add_parser("check", help="validate a config file and print the compiled plan")
    p.add_argument("-c", "--config", default=None)
    _data_dir_flag(p)
    p = sub.add_parser("trust", help="show the local CA root and how to install it")
    p.add_argument(
        "-c", "--config", default=None, help="config whose data_dir to use (if it exists)"
    )
    _data_dir_flag(p)
    p = sub.add_parser("proxy", help="quick mode: proxy one address to one upstream, no file")
    p.add_argument("--from", dest="from_", default="127.0.0.1:8080", help="listen address")
    p.add_argument("--to", required=True, help="upstream, e.g. http://127.0.0.1:8000")
    p.add_argument("--access-log", choices=["json", "combined", "off"], default="combined")
    p = sub.add_parser("demo", help="start a demo backend with bastion in front of it")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--https-port", type=int, default=8443)
    p.add_argument("--admin-port", type=int, default=8090, help="dashboard and admin API")
    p.add_argument("--metrics-port", type=int, default=9464, help="Prometheus /metrics")
    p.add_argument(
        "--no-traffic", action="store_true", help="send no demo traffic (the access log then "
        "goes to stdout)"
    )
    p = sub.add_parser("reload", help="ask the running instance to reload its config")
    p.add_argument("-c", "--config", default=None, help="config whose pid_file to use")
    p.add_argument("--pid-file", default=None)
    sub.add_parser("schema", help="print the JSON Schema of the config file")
    p = sub.add_parser("certs", help="list, renew or revoke the certificates of a config")
    p.add_argument("action", choices=["list", "renew", "revoke"])
    p.add_argument(
        "names",
        nargs="*",
        help="renew/revoke: any name of the site (default: all ACME sites for renew)",
    )
    p.add_argument("-c", "--config", default=None)
    p.add_argument("--json", action="store_true", help="list: one JSON object per certificate")
    _data_dir_flag(p)
    p = sub.add_parser("status", help="show the upstream pools of the running instance")
    p.add_argument("-c", "--config", default=None, help="config whose data_dir and pid_file to use")
    p.add_argument("--json", action="store_true", help="print JSON")
    _data_dir_flag(p)

    p = sub.add_parser("cache", help="purge cached responses in the running gateway")
    p.add_argument("action", choices=["purge"])
    p.add_argument("url", nargs="?", help="the URL to purge (every variant of it)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--prefix", help="a URL or path prefix ('/api/' on every host)")
    what.add_argument("--tag", help="a Surrogate-Key / Cache-Tag value")
    p.add_argument("-c", "--config", default=None)
    _data_dir_flag(p)
    p = sub.add_parser("stats", help="traffic statistics of a window, from the data dir")
    p.add_argument("-c", "--config", default=None, help="config whose data_dir to use")
    p.add_argument("--since", choices=["5m", "1h", "24h", "7d", "30d"], default="1h")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    _data_dir_flag(p)
    p = sub.add_parser("keys", help="create, list or revoke API keys of consumers")
    p.add_argument("action", choices=["create", "list", "revoke"])
    p.add_argument("--consumer", default=None, help="consumer name (create, revoke, list)")
    p.add_argument("--id", dest="key_id", default=None, help="revoke: one key by its id")
    p.add_argument("-c", "--config", default=None, help="config whose data_dir to use")
    _data_dir_flag(p)

    p = sub.add_parser("alerts", help="send a test notification on every alert channel")
    p.add_argument("action", choices=["test"])
    p.add_argument("-c", "--config", default=None)

    args = parser.parse_args(argv)
    if getattr(args, "data_dir", None):
        # exported so that worker processes and reloads resolve the same directory
        os.environ[DATA_DIR_ENV] = str(Path(args.data_dir).expanduser().resolve())
    setup_logging("info")
    handler = {
        "run": cmd_run,
        "check": cmd_check,
        "proxy": cmd_proxy,
        "demo": cmd_demo,
        "reload": cmd_reload,
        "schema": cmd_schema,
        "status": cmd_status,
        "trust": cmd_trust,
        "certs": cmd_certs,
        "cache": cmd_cache,
        "keys": cmd_keys,
        "stats": cmd_stats,
        "alerts": cmd_alerts,
    }[args.command]
    try:
        return handler(args)
    except BrokenPipeError:
        # the reader went away (`bastion status --json | head`): what it did not read is
        # not an error of ours. stdout goes to /dev/null so that the interpreter's own
        # flush at exit does not fail on the closed pipe too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _data_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        default=None,
        help="where the local CA and certificates live (default $BASTION_DATA_DIR, the "
        "config's data_dir, /var/lib/bastion for root, else ~/.local/share/bastion)",
    )


def _load(path: str | None) -> LoadedConfig | None:
    path = path or default_config_path()
    try:
        return load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return None


def cmd_run(args: argparse.Namespace) -> int:
    loaded = _load(args.config)
    if loaded is None:
        return 1
    return serve(loaded)


def serve(loaded: LoadedConfig) -> int:
    """Run until SIGTERM/SIGINT with one worker in this process, or a supervisor."""
    config = loaded.config
    setup_logging(config.log_level)
    pid_file = Path(config.pid_file) if config.pid_file else default_pid_file()
    _write_pid(pid_file)
    from bastion.balance.status import INSTANCE_ENV

    os.environ[INSTANCE_ENV] = str(os.getpid())  # names this instance's status files
    try:
        if config.workers <= 1:
            from bastion.server.worker import run_worker

            try:
                run_worker(loaded)
            except (OSError, ValueError, ConfigError) as exc:
                log.error("cannot start: %s", exc)
                return 1
            return 0
        from bastion.server.supervisor import Supervisor

        return Supervisor(loaded, config.workers).run()
    finally:
        _remove_pid(pid_file)


def _write_pid(path: Path) -> None:
    try:
        path.write_text(f"{os.getpid()}\n")
    except OSError as exc:
        log.warning("cannot write pid file %s: %s", path, exc)


def _remove_pid(path: Path) -> None:
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except OSError:
        pass


def cmd_check(args: argparse.Namespace) -> int:
    loaded = _load(args.config)
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


def cmd_demo(args: argparse.Namespace) -> int:
    import secrets

    import uvloop

    from bastion.demo import ADMIN_TOKEN_ENV, demo_config, start_backend, try_lines
    from bastion.demo_traffic import generate
    from bastion.server.worker import Worker
    from bastion.state.files import ensure_dir, resolve_data_dir
    from bastion.tls.localca import LocalCA

    # the dashboard's token: the one in the environment, else one made up for this run
    token = os.environ.setdefault(ADMIN_TOKEN_ENV, secrets.token_urlsafe(18))

    async def main() -> None:
        backend, port = await start_backend()
        data_dir = ensure_dir(resolve_data_dir(None))
        root = str(LocalCA(data_dir).root_cert_path)
        # generated traffic would bury the lines below in the access log: it goes to a file
        access_log = "stdout" if args.no_traffic else str(data_dir / "demo-access.log")
        config = demo_config(
            port, args.port, args.https_port, root, admin_port=args.admin_port,
            metrics_port=args.metrics_port, access_log=access_log,
        )  # fmt: skip
        worker = Worker(config)
        loop = asyncio.get_running_loop()
        task = loop.create_task(worker.serve())
        while worker.ready is None or not worker.ready.is_set():
            if task.done():
                await task
            await asyncio.sleep(0.02)
        print(
            f"\nbastion demo: gateway on http://127.0.0.1:{args.port} and "
            f"https://localhost:{args.https_port}, demo backend on 127.0.0.1:{port}\n"
            f"\nDashboard: http://127.0.0.1:{args.admin_port}/  (log in with the admin token "
            f"{token} ; it is ${ADMIN_TOKEN_ENV} for the commands below)\n"
            f"Metrics:   http://127.0.0.1:{args.metrics_port}/metrics\n"
            f"Stats:     bastion stats --since 5m\n"
        )
        if not args.no_traffic:
            print(
                "A few requests a second of demo traffic (browsers, a bot, errors, 401s, 429s)"
                f" keep the dashboard busy; access log: {access_log} (--no-traffic: none)\n"
            )
        print("Try:")
        for line in try_lines(args.port, args.https_port, root):
            print("  " + line)
        print("\nCtrl-C stops both.\n", flush=True)
        traffic = None if args.no_traffic else loop.create_task(generate(args.port))
        try:
            await task
        finally:
            if traffic is not None:
                traffic.cancel()
            backend.close()

    try:
        uvloop.run(main())
    except OSError as exc:
        log.error("cannot start the demo: %s", exc)
        return 1
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    pid_path: Path
    if args.pid_file:
        pid_path = Path(args.pid_file)
    elif args.config or os.path.exists(default_config_path()):
        loaded = _load(args.config)
        if loaded is None:
            print(
                "not reloading: the config has errors (the running instance keeps its config)",
                file=sys.stderr,
            )
            return 1
        pid_path = Path(loaded.config.pid_file) if loaded.config.pid_file else default_pid_file()
    else:
        pid_path = default_pid_file()
    try:
        pid = int(pid_path.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        print(f"cannot signal the running instance via {pid_path}: {exc}", file=sys.stderr)
        return 1
    print(f"reload requested (pid {pid})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from bastion.balance import status
    from bastion.server.admin.client import admin_call
    from bastion.state.files import resolve_data_dir
    from bastion.state.stores import Stores

    loaded = _load(args.config)
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
    if args.json:
        print(json.dumps({"pools": pools}, indent=2))
        return 0
    if not pools:
        where = snapshots.where(status.TOPIC)
        print(f"no pool status found in {where}: is bastion running with this config?")
        return 1
    print(status.render(pools))
    return 0


def _configured_data_dir(args: argparse.Namespace) -> tuple[bool, str | None]:
    """(False, None) when the config named (or the default one, if it exists) does not
    load (its errors are printed); else (True, its data_dir setting, None by default)."""
    if not (args.config or os.path.exists(default_config_path())):
        return True, None
    loaded = _load(args.config)
    if loaded is None:
        return False, None
    return True, loaded.config.data_dir


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return 0


def cmd_trust(args: argparse.Namespace) -> int:
    from bastion.state.files import ensure_dir, resolve_data_dir
    from bastion.tls.localca import LocalCA
    from bastion.tls.trust import trust_text

    found, configured = _configured_data_dir(args)
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

    loaded = _load(args.config)
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
    loaded = _load(args.config)
    if loaded is None:
        return 1
    answer = admin_call(loaded.config, "POST", "/api/cache/purge", {kind: value})
    if answer:
        print(
            f"purged {kind} {value}: {answer['purged_here']} entries at once in the worker "
            "that answered; the other workers apply it within a second"
        )
        return 0
    broadcast = Stores(resolve_data_dir(loaded.config.data_dir)).broadcast
    try:
        publish(broadcast, kind, value)
    except OSError as exc:
        print(f"cannot queue the purge in {broadcast.where(TOPIC)}: {exc}", file=sys.stderr)
        return 1
    print(f"purge of {kind} {value} queued; every worker applies it within a second")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from bastion.policies.keycli import run_keys

    found, configured = _configured_data_dir(args)
    if not found:
        return 1
    return run_keys(args.action, args.consumer, args.key_id, configured)


def cmd_stats(args: argparse.Namespace) -> int:
    from bastion.observe.stats.report import run_stats
    from bastion.state.files import resolve_data_dir

    found, configured = _configured_data_dir(args)
    if not found:
        return 1
    return run_stats(resolve_data_dir(configured), args.since, args.json)
def cmd_alerts(args: argparse.Namespace) -> int:
    from bastion.observe.alerts.testsend import send_test

    loaded = _load(args.config)
    if loaded is None:
        return 1
    return send_test(loaded.config.alerts, loaded.secrets, sys.stdout)
