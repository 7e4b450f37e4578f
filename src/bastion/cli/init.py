"""bastion init: write a starting bastion.yaml from flags or a few questions, deriving the
routes and policies from the app's OpenAPI document when there is one (the logic lives in
bastion.initconfig; this module parses flags and asks)."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

DEFAULT_UPSTREAM = "http://127.0.0.1:8000"
DEFAULT_LISTEN = "127.0.0.1:8080"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "init",
        help="write a starting bastion.yaml; from an OpenAPI document, its routes and policies",
        description="Write a starting bastion.yaml. Given the app's OpenAPI document (FastAPI "
        "serves /openapi.json), derive its routes, request validation and authentication. "
        "Missing answers are asked at a terminal, else defaults are used.",
    )
    p.add_argument(
        "--domain",
        help="public name, served over HTTPS with an ACME certificate "
        "(omitted: a local plain-HTTP setup)",
    )
    p.add_argument("--to", dest="upstream", help=f"the app's address (default {DEFAULT_UPSTREAM})")
    p.add_argument("--email", help="contact address for the ACME account (with --domain)")
    p.add_argument(
        "--openapi",
        metavar="URL|FILE",
        help="the app's OpenAPI 3 document (default: try <to>/openapi.json)",
    )
    p.add_argument("--no-openapi", action="store_true", help="do not look for a document")
    p.add_argument(
        "--listen", help=f"plain-HTTP address of a local setup (default {DEFAULT_LISTEN})"
    )
    p.add_argument(
        "-o",
        "--output",
        default="bastion.yaml",
        help="where to write (default ./bastion.yaml; - for stdout)",
    )
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.add_argument("-y", "--yes", action="store_true", help="ask nothing; use the defaults")
    p.set_defaults(handler=cmd_init)


def _ask(question: str, default: str, err: TextIO) -> str:
    shown = f" [{default}]" if default else ""
    err.write(f"{question}{shown}: ")
    err.flush()
    answer = sys.stdin.readline()
    if not answer:  # end of input: the default
        err.write("\n")
        return default
    return answer.strip() or default


def _answers(args: argparse.Namespace, err: TextIO) -> None:
    """Fill the missing answers: asked at a terminal, defaults otherwise."""
    interactive = sys.stdin.isatty() and not args.yes
    if args.domain is None and interactive:
        args.domain = _ask("Public domain name (empty: local setup, plain HTTP)", "", err)
    if args.upstream is None:
        args.upstream = (
            _ask("Where does the app listen", DEFAULT_UPSTREAM, err)
            if interactive
            else DEFAULT_UPSTREAM
        )
    if args.domain and args.email is None and interactive:
        args.email = _ask("Email for certificate notices (optional)", "", err) or None
    if args.openapi is None and not args.no_openapi and interactive:
        guess = _openapi_guess(args.upstream)
        answer = _ask("OpenAPI document, URL or file (none: skip)", guess, err)
        if answer.lower() == "none" or not answer:
            args.no_openapi = True
        elif answer != guess:
            args.openapi = answer


def _openapi_guess(upstream: str) -> str:
    """Where a FastAPI app at ``upstream`` serves its document ("" for a socket)."""
    from bastion.cli.quick_addresses import QuickAddressError, parse_to

    try:
        url = parse_to(upstream)
    except QuickAddressError:
        return ""
    return url.rstrip("/") + "/openapi.json" if url.startswith(("http://", "https://")) else ""


def _problem(args: argparse.Namespace) -> str | None:
    from bastion.cli.quick_addresses import QuickAddressError, parse_to
    from bastion.config.matching import parse_host_pattern

    try:
        # the forms of `bastion proxy --to` (:8000, localhost:8000, http://…, unix:/…)
        args.upstream = parse_to(args.upstream)
    except QuickAddressError as exc:
        return str(exc)
    if args.domain:
        try:
            parse_host_pattern(args.domain)
        except ValueError as exc:
            return f"--domain: {exc}"
        if args.domain.startswith("*"):
            return "--domain: give one name; wildcards need a DNS hook (docs/https.md)"
    return None


def cmd_init(args: argparse.Namespace) -> int:
    from bastion import initconfig

    to_stdout = args.output == "-"
    out = sys.stderr if to_stdout else sys.stdout
    try:
        _answers(args, sys.stderr)
    except KeyboardInterrupt:
        print("\nbastion init: stopped, nothing written", file=sys.stderr)
        return 130
    args.domain = (args.domain or "").strip().lower() or None
    problem = _problem(args)
    if problem:
        print(f"bastion init: {problem}", file=sys.stderr)
        return 2
    if not args.domain and args.email:
        print("note: --email is for the ACME account of a --domain: not used", file=out)
    if args.domain and args.listen:
        print("note: --listen is for a local setup: a --domain listens on :80 and :443", file=out)
    try:
        document, found = initconfig.find_document(args.openapi, args.upstream, not args.no_openapi)
        if found:
            print(found, file=out)
        setup = initconfig.Setup(
            upstream=args.upstream,
            domain=args.domain,
            email=args.email or None,
            listen=args.listen or DEFAULT_LISTEN,
            openapi_file=initconfig.OPENAPI_FILE if document else None,
            source=document.where if document else "",
            title=document.title if document else "",
            config_name="bastion.yaml" if to_stdout else args.output,
        )
        derived = initconfig.derive(setup, document, initconfig.discover_oidc)
        written = initconfig.write_all(args.output, derived, document, args.force, sys.stdout)
    except initconfig.InitError as exc:
        print(f"bastion init: {exc}", file=sys.stderr)
        return 1
    name = "bastion.yaml" if to_stdout else args.output
    for line in initconfig.report(derived, written, name, to_stdout):
        print(line, file=out)
    return 0
