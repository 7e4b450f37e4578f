"""What ``bastion init`` writes, and writing it: the config, the saved OpenAPI document next to
it, and an empty ``htpasswd`` when a route uses Basic auth. Nothing is overwritten without
``force``; the config is checked with the gateway's own loader once written."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import yaml

from bastion.config import ConfigError, load_config
from bastion.initconfig.document import Document, InitError
from bastion.initconfig.render import Setup, render
from bastion.initconfig.routes import RoutePlan, operations, plan_routes
from bastion.initconfig.security import SchemeBook

__all__ = ["Derived", "derive", "write_all"]

OPENAPI_FILE = "openapi.json"
HTPASSWD_FILE = "htpasswd"
_HTPASSWD_HEAD = (
    "# name:hash lines (bcrypt or argon2), read by bastion's Basic auth.\n"
    "# Add a user: htpasswd -B htpasswd NAME\n"
)


@dataclass
class Derived:
    text: str
    routes: list[RoutePlan] | None
    env: list[str] = field(default_factory=list)
    htpasswd: bool = False
    warnings: list[str] = field(default_factory=list)


def _servers_path(doc: dict[str, Any]) -> str:
    servers = doc.get("servers")
    if isinstance(servers, list) and servers and isinstance(servers[0], dict):
        path = urlsplit(str(servers[0].get("url", ""))).path.rstrip("/")
        return path
    return ""


def derive(
    setup: Setup,
    document: Document | None,
    discover: Callable[[str], tuple[str, str] | None] | None = None,
) -> Derived:
    """The config text for `setup` and, when given, the document's routes and policies."""
    if document is None:
        return Derived(render(setup, None), None)
    doc = document.doc
    components = doc.get("components")
    if not isinstance(components, dict):
        components = {}
    book = SchemeBook(components.get("securitySchemes"), discover)
    ops = operations(doc, book)
    warnings = []
    if not ops:
        warnings.append(
            f"{document.where} describes no operations: wrote one route proxying every "
            "request, without validation"
        )
        plain = replace(setup, openapi_file=None)
        return Derived(render(plain, None), None, warnings=warnings)
    base = _servers_path(doc)
    if base:
        warnings.append(
            f"the document's server URL has the path {base}: the routes are written for the "
            "paths as the document lists them; if clients call them under that prefix, add it "
            "to each route path and set validation.base_path (docs/init.md)"
        )
    routes = plan_routes(ops)
    methods = [use.method for route in routes for use in route.access.uses]
    env = list(dict.fromkeys(name for m in methods for name in m.env))
    unchecked = sum(1 for route in routes if route.notes and route.access.public)
    if unchecked:
        warnings.append(
            f"{unchecked} route(s) leave authentication to the app (see the notes in the file)"
        )
    if any(m.kind == "api_keys" for m in methods):
        warnings.append(
            "bastion now checks the API keys (made with `bastion keys create`) and sends the "
            "app X-Consumer instead of the key: an app that checks the key itself must trust "
            "X-Consumer instead (docs/init.md, API keys and the app)"
        )
    if any("issuer.invalid" in str(dict(m.settings).get("jwks_url")) for m in methods):
        warnings.append("JWT routes need your identity provider's jwks_url (TODO in the file)")
    return Derived(
        render(setup, routes),
        routes,
        env,
        any(m.kind == "basic" for m in methods),
        warnings,
    )


def _check_text(text: str) -> None:
    """The text is YAML that reads back as a mapping (a bug here must not write a file)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InitError(
            f"bastion init produced invalid YAML (a bug, please report): {exc}"
        ) from None
    if not isinstance(data, dict) or not data.get("sites"):
        raise InitError("bastion init produced a config without sites (a bug, please report)")


def _refuse_existing(paths: list[Path], force: bool) -> None:
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        names = ", ".join(str(p) for p in existing)
        raise InitError(
            f"{names} already exists: not overwritten. Use --force to replace it, "
            "or -o PATH to write elsewhere"
        )


def _write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, mode)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InitError(f"cannot write {path}: {exc.strerror or exc}") from None


def _self_check(path: Path, env: list[str]) -> None:
    """Load the written config as `bastion check` would. Variables the user has still to
    export stand in with a placeholder long enough for any secret, for this check only."""
    missing = [name for name in env if name not in os.environ]
    try:
        os.environ.update({name: "x" * 64 for name in missing})
        load_config(path)
    except ConfigError as exc:
        raise InitError(
            f"the written config does not load (a bug, please report):\n{exc}"
        ) from None
    finally:
        for name in missing:
            os.environ.pop(name, None)


def write_all(
    output: str, derived: Derived, document: Document | None, force: bool, out: TextIO
) -> list[Path]:
    """Write the config (to `out` when `output` is ``-``) and the files beside it; return
    the files written."""
    _check_text(derived.text)
    to_stdout = output == "-"
    config = None if to_stdout else Path(output).expanduser()
    folder = Path.cwd() if config is None else config.parent
    planned: list[tuple[Path, str, int]] = []
    if document is not None and derived.routes is not None:
        planned.append((folder / OPENAPI_FILE, document.text, 0o644))
    if derived.htpasswd and not (folder / HTPASSWD_FILE).exists():
        planned.append((folder / HTPASSWD_FILE, _HTPASSWD_HEAD, 0o600))
    if config is not None:
        planned.append((config, derived.text, 0o644))
    # a saved document identical to the one there is not an overwrite; the config always is
    same = [
        p
        for p, text, _ in planned
        if p != config and p.is_file() and p.read_text(errors="replace") == text
    ]
    if not folder.is_dir():
        raise InitError(f"{folder} is not a directory")
    _refuse_existing([p for p, _, _ in planned if p not in same], force)
    written = []
    for path, text, mode in planned:
        if path not in same:
            _write(path, text, mode)
        written.append(path)
    if config is not None:
        _self_check(config, derived.env)
        return written
    # checked beside the saved document, which the config names by a relative path
    trial = folder / f".bastion-init-{os.getpid()}.yaml"
    try:
        _write(trial, derived.text, 0o600)
        _self_check(trial, derived.env)
    finally:
        trial.unlink(missing_ok=True)
    out.write(derived.text)
    out.flush()
    return written
