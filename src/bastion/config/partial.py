"""Only the settings an operator command needs, read from the config file.

`bastion keys`, `status`, `certs`, `cache purge`, `stats`, `trust` and `reload` need the data
dir, the pid file and (to ask the running gateway) the admin listener and its token; `certs`
also the listeners, the sites' names and TLS modes, and the acme section. The whole file is
parsed (a syntax error is still reported with its line), but ``${ENV}`` placeholders are
resolved, and values validated, only under the keys read: a JWT secret or an upstream header
secret that this shell does not have is none of these commands' business.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from bastion.config.admin_models import Admin
from bastion.config.errors import ConfigError, ConfigIssue, Loc, format_path, line_of
from bastion.config.loader import read_document, reading_issues
from bastion.config.messages import describe_error
from bastion.config.models import Config
from bastion.config.secrets import substitute
from bastion.config.show import hiding, redact
from bastion.config.state_models import State
from bastion.config.types import BASE_DIR_KEY, RelativePath

__all__ = [
    "OperatorSettings",
    "certs_config",
    "operator_settings",
    "unset_variable",
]

# secrets.py's wording for a placeholder whose variable is missing
_UNSET = re.compile(r"environment variable ([A-Za-z_][A-Za-z0-9_]*) is not set")


def unset_variable(issue: ConfigIssue) -> str | None:
    """The variable's name when ``issue`` only says that an environment variable is not set
    here (a gateway started elsewhere, by systemd say, may well have it); else None."""
    match = _UNSET.fullmatch(issue.message)
    return match.group(1) if match else None


class _Paths(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    data_dir: RelativePath | None = None
    pid_file: RelativePath | None = None


@dataclass(frozen=True)
class OperatorSettings:
    """What every operator command may need from the config file."""

    source: Path
    data_dir: str | None
    """The config's ``data_dir`` (absolute), None when it sets none."""
    pid_file: str | None
    admin: Admin | None
    """The admin listener's settings when it is configured and usable from here."""
    admin_problems: list[ConfigIssue] = field(default_factory=list)
    """Why ``admin`` is None although ``admin.listen`` is set (e.g. its token's variable is
    not set in this shell): the command then works from the data dir, and says why."""
    state: State = field(default_factory=State)
    """Where shared state lives (``state.redis``): API keys, purges and reloads go there."""


class _File:
    """One parsed config file, read key by key."""

    def __init__(self, path: str | Path) -> None:
        self.name, self.source, self.document = read_document(path)
        data = self.document.data
        self.data: dict[str, Any] = data if isinstance(data, dict) else {}

    def issue(self, loc: Loc, message: str) -> ConfigIssue:
        return ConfigIssue(self.name, line_of(loc, self.document.lines), format_path(loc), message)

    def read_problems(self, under: Iterable[Loc]) -> list[ConfigIssue]:
        """The reading problems (a duplicate key) of the keys read, and only those."""
        prefixes = list(under)
        return [
            issue
            for (loc, _, _), issue in zip(
                self.document.problems, reading_issues(self.name, self.document), strict=True
            )
            if any(loc[: len(p)] == p for p in prefixes)
        ]

    def validate(
        self, model: type[BaseModel], data: dict[str, Any], at: Loc = ()
    ) -> tuple[Any, list[ConfigIssue]]:
        """``data`` (found at key path ``at``) with its placeholders resolved, validated as
        ``model``: (the model or None, the problems)."""
        substitution = substitute(data, self.source.parent)
        issues = [self.issue((*at, *loc), message) for loc, message in substitution.problems]
        if issues:
            return None, issues
        secrets = frozenset(substitution.secrets)
        try:
            with hiding(secrets):
                value = model.model_validate(
                    substitution.data, context={BASE_DIR_KEY: self.source.parent}
                )
        except ValidationError as exc:
            for error in exc.errors():
                error["loc"] = (*at, *error["loc"])  # named from the top of the file
                path, message = describe_error(error)
                issues.append(self.issue(tuple(path), redact(message, secrets)))
            return None, issues
        return value, []


def operator_settings(path: str | Path) -> OperatorSettings:
    """The data dir, pid file and admin settings of the config at ``path``.

    Raises ``ConfigError`` when the file does not read as YAML, or when ``data_dir`` or
    ``pid_file`` have a problem (the command cannot know where to look). A problem under
    ``admin`` is not fatal: it is returned with ``admin`` None."""
    config = _File(path)
    wanted: dict[str, Any] = {
        k: config.data[k] for k in ("data_dir", "pid_file") if k in config.data
    }
    problems = config.read_problems([("data_dir",), ("pid_file",), ("state",)])
    paths, issues = config.validate(_Paths, wanted)
    # the state section says where keys, purges and reloads go: a problem there is fatal too
    state, state_issues = config.validate(State, config.data.get("state") or {}, ("state",))
    if problems or issues or state_issues:
        raise ConfigError(problems + issues + state_issues)
    admin, admin_problems = _admin(config)
    return OperatorSettings(
        config.source, paths.data_dir, paths.pid_file, admin, admin_problems, state
    )


def _admin(config: _File) -> tuple[Admin | None, list[ConfigIssue]]:
    section = config.data.get("admin")
    if not isinstance(section, dict) or section.get("listen") is None:
        return None, []  # no admin listener: nothing to ask
    problems = config.read_problems([("admin",)])
    admin, issues = config.validate(Admin, section, ("admin",))
    if problems or issues:
        return None, problems + issues
    return admin, []


# A site's routes are where most secrets live (upstream headers, JWT keys, passwords), and
# certificates depend on none of them: each site is validated with this stand-in route in place
# of its own, so that Site's own checks of `hosts` and `tls` run unchanged.
_STAND_IN_ROUTE = {"path": "/", "respond": {}}


def certs_config(path: str | Path, *, ordering: bool) -> Config:
    """A ``Config`` holding what `bastion certs` reads: the listeners, each site's hosts
    and tls, the data dir and the acme section; its routes are stand-ins.

    Listing needs only ``acme.directory`` (the store is kept per CA); renewing and revoking
    (``ordering``) talk to the CA, so they read the whole acme section, with its EAB key
    and DNS hook. Raises ``ConfigError`` for a problem under what is read."""
    config = _File(path)
    data = config.data
    reduced: dict[str, Any] = {
        k: data[k] for k in ("listen", "data_dir", "state") if k in data
    }
    acme = data.get("acme")
    if isinstance(acme, dict) and not ordering:
        acme = {k: acme[k] for k in ("directory",) if k in acme}
    if acme is not None:
        reduced["acme"] = acme
    sites = data.get("sites")
    if isinstance(sites, list):
        reduced["sites"] = [
            {**{k: s[k] for k in ("hosts", "tls") if k in s}, "routes": [_STAND_IN_ROUTE]}
            if isinstance(s, dict)
            else s
            for s in sites
        ]
    elif sites is not None:
        reduced["sites"] = sites
    read: list[Loc] = [("listen",), ("data_dir",), ("acme",), ("state",)]
    for index, site in enumerate(sites if isinstance(sites, list) else []):
        read += [("sites", index, "hosts"), ("sites", index, "tls")]
        if not isinstance(site, dict):
            read.append(("sites", index))
    problems = config.read_problems(read)
    value, issues = config.validate(Config, reduced)
    if problems or issues:
        raise ConfigError(sorted(problems + issues, key=lambda i: (i.line is None, i.line or 0)))
    assert isinstance(value, Config)
    return value
