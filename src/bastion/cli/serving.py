"""bastion run, and reload: serve a config file until told to stop; ask a running
instance to reload its config."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from bastion import __version__, build_kind
from bastion.cli.common import (
    config_flag,
    data_dir_flag,
    data_dir_of,
    default_pid_file,
    load,
    operator_settings,
    pid_file_of,
)
from bastion.config import ConfigError, ConfigIssue, LoadedConfig
from bastion.observe.oplog import setup_logging

log = logging.getLogger("bastion")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="serve with a config file")
    config_flag(p)
    data_dir_flag(p)
    p.set_defaults(handler=cmd_run)
    p = sub.add_parser("reload", help="ask the running instance to reload its config")
    config_flag(p, "config whose pid_file to use")
    p.add_argument("--pid-file", default=None)
    p.add_argument(
        "--all",
        action="store_true",
        help="every instance sharing the config's state.redis reloads its own config file",
    )
    p.set_defaults(handler=cmd_reload)


def cmd_run(args: argparse.Namespace) -> int:
    loaded = load(args.config, apart=True)
    if loaded is None:
        return 1
    return serve(loaded)


def serve(loaded: LoadedConfig) -> int:
    """Run until SIGTERM/SIGINT with one worker in this process, or a supervisor."""
    config = loaded.config
    setup_logging(config.log_level)
    log.info("bastion %s, %s build", __version__, build_kind())
    pid_file = Path(config.pid_file) if config.pid_file else default_pid_file()
    _write_pid(pid_file)
    from bastion.balance.status import INSTANCE_ENV

    os.environ[INSTANCE_ENV] = str(os.getpid())  # names this instance's status files
    try:
        if config.workers <= 1:
            from bastion.server.worker import run_worker

            try:
                run_worker(loaded)
            except ConfigError as exc:
                log.error("cannot start:\n%s", loaded.locate(exc))
                return 1
            except (OSError, ValueError) as exc:
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


def cmd_reload(args: argparse.Namespace) -> int:
    if args.all:
        return reload_all(args)
    pid_path: Path
    if args.pid_file:
        pid_path = Path(args.pid_file)
        why = "--pid-file"
    else:
        ok, settings = operator_settings(args)
        if not ok:
            print(
                "not reloading: the config has errors (the running instance keeps its config)",
                file=sys.stderr,
            )
            return 1
        pid_path = pid_file_of(settings)
        why = (
            f"from the pid_file of {settings.source}"
            if settings is not None and settings.pid_file
            else "the default"
        )
        if settings is not None and not _worth_reloading(settings.source):
            return 1
    print(f"pid file: {pid_path} ({why})", file=sys.stderr)
    try:
        pid = int(pid_path.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        print(f"cannot signal the running instance via {pid_path}: {exc}", file=sys.stderr)
        return 1
    print(f"reload requested (pid {pid})")
    return 0


def _worth_reloading(source: Path) -> bool:
    """Whether the file the gateway is about to read again is a config: its errors are
    printed here and then it is not worth signalling. A variable this shell does not have
    is no such error, nor what follows from its absence (a rule about the key holding it):
    the gateway resolves placeholders in its own environment, and keeps its running config
    if that fails there too."""
    from bastion.config.loader import load_config
    from bastion.config.partial import unset_variable

    try:
        load_config(source)
    except ConfigError as exc:
        unset = {i.path: unset_variable(i) for i in exc.issues if unset_variable(i)}

        def follows(issue: ConfigIssue) -> bool:
            return any(
                issue.path == path or path.startswith(issue.path + ".") or not issue.path
                for path in unset
            )

        errors = [i for i in exc.issues if not follows(i)]
        if errors:
            print(ConfigError(errors), file=sys.stderr)
            print(
                "not reloading: the config has errors (the running instance keeps its config)",
                file=sys.stderr,
            )
            return False
        names = ", ".join(sorted({name for name in unset.values() if name}))
        print(
            f"note: not set in this shell: {names}; the gateway resolves them in its own "
            "environment (if it cannot, it keeps its running config and logs why)",
            file=sys.stderr,
        )
    return True


def reload_all(args: argparse.Namespace) -> int:
    """Publish a reload through Redis: every worker of every instance reloads its own file."""
    ok, settings = operator_settings(args)
    if not ok:
        return 1
    if settings is None or settings.state.redis is None:
        print(
            "reload --all needs state.redis in the config (the instances hear it through "
            "Redis); without it, reload the one instance of this pid file: bastion reload",
            file=sys.stderr,
        )
        return 2
    from bastion.server.cluster import RELOAD_TOPIC, reload_message
    from bastion.state.stores import Stores

    if not _worth_reloading(settings.source):
        return 1
    stores = Stores(data_dir_of(args, settings))
    stores.use_state(settings.state)
    try:
        stores.broadcast.publish(RELOAD_TOPIC, reload_message())
    except OSError as exc:
        print(f"reload --all not sent: {exc}", file=sys.stderr)
        return 1
    print(
        "reload sent to every instance connected to Redis: each reloads its own config file "
        "(bastion status shows their config hashes)"
    )
    return 0
