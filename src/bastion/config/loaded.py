"""A validated config and where it came from: what a serving process holds.

Plain data, without pydantic: the config is either the validated models (in the process
that validated it) or their plain copy (``bastion.config.handoff``); the code that serves
reads both the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.config.errors import ConfigError, ConfigIssue, Loc, line_of

if TYPE_CHECKING:
    from bastion.config.models import Config


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config and where it came from."""

    config: Config
    source: Path | None
    """The config file (absolute), None when built from a dict."""
    secrets: frozenset[str]
    """Every value substituted from ``${ENV}`` or ``${file:...}``: redact these when printing."""
    lines: Mapping[Loc, int] = field(default_factory=dict, compare=False, repr=False)
    """The line of each key path in the file, for errors found after validation."""
    dumped: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    """The config as JSON data (pydantic's ``model_dump(mode="json")``), made by the process
    that validated it when the config was handed over as plain objects; see ``as_json``."""

    def locate(self, error: ConfigError) -> ConfigError:
        """``error`` (raised by the plan compiler, which knows key paths but not lines)
        with each issue's line found in this file."""
        return ConfigError(
            ConfigIssue(i.file, line_of(i.loc, self.lines), i.path, i.message, loc=i.loc)
            if i.line is None and i.loc is not None
            else i
            for i in error.issues
        )

    def as_json(self) -> Mapping[str, Any]:
        """The config as JSON data, secrets shown as pydantic shows them (``**********``)."""
        if self.dumped is not None:
            return self.dumped
        dump: Mapping[str, Any] = self.config.model_dump(mode="json")
        return dump
