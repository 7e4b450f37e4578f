"""bastion demo: a demo backend with bastion in front of it, and what to try."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import TYPE_CHECKING

from bastion import build_kind

if TYPE_CHECKING:
    from bastion.config import LoadedConfig

log = logging.getLogger("bastion")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="start a demo backend with bastion in front of it")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--https-port", type=int, default=8443)
    p.add_argument("--admin-port", type=int, default=8090, help="dashboard and admin API")
    p.add_argument("--metrics-port", type=int, default=9464, help="Prometheus /metrics")
    p.add_argument(
        "--no-traffic",
        action="store_true",
        help="send no demo traffic (the access log then goes to stdout)",
    )
    p.set_defaults(handler=cmd_demo)


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
            f"\nbastion demo ({build_kind()} build): gateway on http://127.0.0.1:{args.port} and "
            f"https://localhost:{args.https_port}, demo backend on 127.0.0.1:{port}\n"
            f"\nDashboard: http://127.0.0.1:{args.admin_port}/  (log in with the admin token "
            f"{token} ; it is ${ADMIN_TOKEN_ENV} for the commands below)\n"
            f"Metrics:   http://127.0.0.1:{args.metrics_port}/metrics\n"
            f"Stats:     bastion stats --since 5m\n"
        )
        for line in await _doctor_lines(config):
            print(line)
        print()
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


async def _doctor_lines(config: LoadedConfig) -> list[str]:
    """``bastion doctor``'s verdict on the demo config, offline: a summary line, then any
    WARN or FAIL finding. Run in a thread: the gateway keeps serving meanwhile."""
    from bastion.doctor import DoctorContext, Status, diagnose, summary_line

    ctx = DoctorContext("the demo config", offline=True, loaded=config, unit_path=None)
    try:
        report = await asyncio.to_thread(diagnose, ctx)
    except Exception as exc:  # the demo runs on whatever the doctor thinks of it
        return [f"doctor: could not run: {exc}"]
    lines = [f"doctor: {summary_line(report)}  (bastion doctor -c FILE checks a deployment)"]
    for outcome in report.outcomes:
        for finding in outcome.findings:
            if finding.status in (Status.WARN, Status.FAIL):
                lines.append(f"  {finding.status} {outcome.check.id}: {finding.found}")
    return lines
