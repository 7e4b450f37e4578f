"""bastion proxy: quick mode, like ``caddy reverse-proxy``: one address proxied to one or
more upstreams, with HTTPS, without a config file.

The flags become an ordinary config (``quick_config``), validated exactly as a file would
be, and served by ``serve``; nothing here is special at run time."""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
from typing import Any

from bastion.cli.common import data_dir_flag
from bastion.cli.formatting import RawDescriptionHelpFormatter
from bastion.cli.quick_addresses import (
    FROM_FORMS,
    TO_FORMS,
    FromAddress,
    QuickAddressError,
    parse_from,
    parse_to,
)
from bastion.cli.serving import serve
from bastion.config import ConfigError
from bastion.config.handoff import config_from_dict_apart
from bastion.config.matching import is_private_acme, uses_acme
from bastion.state.files import resolve_data_dir

_DESCRIPTION = f"""\
Proxy one address to one or more upstreams, without a config file: the equivalent of
`caddy reverse-proxy`. A name in --from is served over HTTPS: public names get a
certificate over ACME (Let's Encrypt unless --acme-directory), with HTTP on :80 redirected
to HTTPS on :443; localhost, *.localhost, IP addresses and names under --internal-certs
get one from bastion's local CA. --from :PORT, IP:PORT or http://NAME[:PORT] is plain HTTP
on that address. Several --to are balanced round-robin.

--from: {FROM_FORMS} (default 127.0.0.1:8080, plain HTTP).
--to:   {TO_FORMS} (:PORT means 127.0.0.1:PORT)."""

_EPILOG = """\
examples:
  bastion proxy --to :8000
      http://127.0.0.1:8080/ → http://127.0.0.1:8000
  bastion proxy --from localhost --to :8000
      https://localhost/ with a local-CA certificate (`bastion trust` shows how to trust it)
  bastion proxy --from https://localhost:8443 --http-port 8080 --to :8000 --to :8001
      HTTPS on 8443, HTTP on 8080 redirected to it, balanced across two backends
  sudo bastion proxy --from api.example.com --to :8000 --email ops@example.com
      a certificate from Let's Encrypt; needs ports 80 and 443 and DNS pointing here
  bastion proxy --from :9000 --to unix:/run/app.sock
      plain HTTP on every interface to a Unix socket

See docs/quick-mode.md. For more than this, write a config file (docs/configuration.md)."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "proxy",
        help="quick mode: proxy an address to upstreams with HTTPS, no config file",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--from",
        dest="from_",
        default="127.0.0.1:8080",
        metavar="ADDRESS",
        help="address to serve (default 127.0.0.1:8080, plain HTTP)",
    )
    p.add_argument(
        "--to",
        action="append",
        required=True,
        metavar="UPSTREAM",
        help="upstream; give it several times to balance across them",
    )
    p.add_argument(
        "--http-port",
        type=int,
        default=None,
        metavar="PORT",
        help="with HTTPS, also listen for plain HTTP on this port and redirect it "
        "(default: 80 when HTTPS is on 443, else no plain-HTTP listener)",
    )
    p.add_argument(
        "--internal-certs",
        action="store_true",
        help="certificates from bastion's local CA even for public names (no ACME)",
    )
    p.add_argument("--email", default=None, help="contact address for the ACME account")
    p.add_argument(
        "--acme-directory",
        default=None,
        metavar="URL",
        help="ACME directory URL (default Let's Encrypt; e.g. its staging, or Pebble)",
    )
    p.add_argument(
        "--acme-ca-root",
        default=None,
        metavar="PEM",
        help="CA certificates to trust when talking to a private ACME server",
    )
    p.add_argument(
        "--access-log",
        choices=["json", "combined", "off"],
        default="combined",
        help="access log format on stdout (default combined)",
    )
    data_dir_flag(p)
    p.set_defaults(handler=cmd_proxy)


def quick_config(args: argparse.Namespace) -> tuple[dict[str, Any], FromAddress, list[str]]:
    """The config the flags stand for, the --from address and the upstreams.
    Raises ``QuickAddressError`` for a flag in none of its forms."""
    origin = parse_from(args.from_)
    upstreams = [parse_to(value) for value in args.to]
    listen: dict[str, Any]
    if origin.scheme == "http":
        if args.http_port is not None:
            raise QuickAddressError(
                f"--http-port applies to an HTTPS --from; {args.from_!r} is plain HTTP already"
            )
        listen = {"http": [origin.listen()], "https": []}
    else:
        http_port = args.http_port
        if http_port is None and origin.port == 443:
            http_port = 80
        if http_port is not None and not 1 <= http_port <= 65535:
            raise QuickAddressError(f"--http-port {http_port}: expected a port from 1 to 65535")
        if http_port == origin.port:
            raise QuickAddressError(
                f"--http-port {http_port}: HTTPS is on that port already; choose another"
            )
        http = [origin.listen(http_port)] if http_port is not None else []
        listen = {"http": http, "https": [origin.listen()]}
    site: dict[str, Any] = {
        "hosts": [origin.host or "*"],
        "routes": [{"path": "/", "proxy": {"upstreams": upstreams}}],
    }
    if origin.scheme == "https":
        site["tls"] = "internal" if args.internal_certs else "auto"
    config: dict[str, Any] = {
        "listen": listen,
        "access_log": {"format": args.access_log, "path": "stdout"},
        "sites": [site],
    }
    acme = {
        key: value
        for key, value in (
            ("email", args.email),
            ("directory", args.acme_directory),
            ("trusted_roots", args.acme_ca_root),
        )
        if value is not None
    }
    if acme:
        config["acme"] = acme
    return config, origin, upstreams


# a config error names the flag it came from, not the key the flag became
_FLAG_OF_KEY = {
    "acme.email": "--email",
    "acme.directory": "--acme-directory",
    "acme.trusted_roots": "--acme-ca-root",
    "access_log.format": "--access-log",
    "sites[0].tls": "--from",
}


def cmd_proxy(args: argparse.Namespace) -> int:
    try:
        data, origin, upstreams = quick_config(args)
    except QuickAddressError as exc:
        print(f"bastion proxy: {exc}", file=sys.stderr)
        return 2
    try:
        # validated by a child: the gateway this process becomes holds no pydantic
        loaded = config_from_dict_apart(data, source="<command line>")
    except OSError as exc:
        print(f"bastion proxy: the config could not be validated: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        for issue in exc.issues:
            where = _FLAG_OF_KEY.get(issue.path, issue.path)
            print(f"bastion proxy: {where + ': ' if where else ''}{issue.message}", file=sys.stderr)
        if origin.host is not None and origin.host.startswith("*."):
            print(
                "bastion proxy: quick mode has no DNS hook for a public wildcard: add "
                "--internal-certs, or write a config file with acme.dns_hook",
                file=sys.stderr,
            )
        return 2
    config = loaded.config
    blocked = _privileged_port_refused([*config.listen.http, *config.listen.https])
    if blocked is not None:
        print(
            f"bastion proxy: cannot listen on port {blocked}: ports below 1024 need root or "
            "the CAP_NET_BIND_SERVICE capability. Run it with sudo; or grant the capability "
            f"(sudo setcap cap_net_bind_service=+ep {os.path.realpath(sys.executable)}, which "
            "then applies to every script of that interpreter; `bastion service install` "
            "grants it to the service alone); or use high ports, e.g. "
            "--from https://localhost:8443 --http-port 8080",
            file=sys.stderr,
        )
        return 1
    _announce(args, origin, upstreams)
    return serve(loaded)


def _announce(args: argparse.Namespace, origin: FromAddress, upstreams: list[str]) -> None:
    """Say on stderr what is served where, and where its certificate comes from."""
    print(f"bastion proxy: {origin.url} → {', '.join(upstreams)}", file=sys.stderr)
    if origin.scheme != "https" or origin.host is None:
        return
    private = is_private_acme(args.acme_directory)
    if not args.internal_certs and uses_acme(origin.host, private):
        ca = args.acme_directory or "Let's Encrypt"
        print(f"bastion proxy: certificate for {origin.host} from {ca} (ACME)", file=sys.stderr)
    else:
        root = resolve_data_dir(None) / "ca" / "root.crt"
        print(
            f"bastion proxy: certificate from the local CA; clients trust it with {root} "
            "(see `bastion trust`)",
            file=sys.stderr,
        )


def _privileged_port_refused(addresses: list[Any]) -> int | None:
    """The first port below 1024 this process may not bind, found by trying it (the
    capability, or a lowered net.ipv4.ip_unprivileged_port_start, may allow it)."""
    for address in addresses:
        if address.port >= 1024:
            continue
        host = address.host or ""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, address.port))
            except PermissionError:
                return int(address.port)
            except OSError as exc:
                if exc.errno == errno.EACCES:
                    return int(address.port)
    return None
