"""Load a config: read the YAML file, substitute secrets, validate, report every problem.

The pipeline keeps going after a problem wherever it can (duplicate keys, a missing secret,
field errors, cross-field rules all show up in one report); only a file that cannot be read or
parsed as YAML stops it early.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bastion.config.errors import ConfigError, ConfigIssue, Loc, format_path, line_of
from bastion.config.loaded import LoadedConfig
from bastion.config.messages import describe_error
from bastion.config.models import Config
from bastion.config.secrets import substitute
from bastion.config.show import hiding, redact
from bastion.config.types import BASE_DIR_KEY
from bastion.config.yamlsource import YamlDocument, parse_yaml

__all__ = [
    "LoadedConfig",
    "config_from_dict",
    "json_schema",
    "load_config",
    "read_document",
    "reading_issues",
]


def load_config(path: str | Path) -> LoadedConfig:
    """Read and validate the config file at ``path``.

    Raises ``ConfigError`` listing every problem found, each with the file, line and key path.
    """
    name, source, document = read_document(path)
    issues = reading_issues(name, document)
    config, secrets = _validate(
        document.data, source.parent, name, document.lines, issues, document.failed
    )
    return LoadedConfig(config, source, secrets, document.lines)


def read_document(path: str | Path) -> tuple[str, Path, YamlDocument]:
    """The file at ``path`` as YAML data: (its name as given, its absolute path, the
    document). Raises ``ConfigError`` when it cannot be read or is not YAML; problems that do
    not stop reading (a duplicate key) are left in the document's ``problems``."""
    name = str(path)
    source = Path(path).expanduser().resolve()
    try:
        raw = source.read_bytes()
    except OSError as error:
        raise ConfigError(
            [ConfigIssue(name, None, "", f"cannot read the config file: {error.strerror or error}")]
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise ConfigError([ConfigIssue(name, line, "", "the file is not UTF-8 text")]) from None
    document = parse_yaml(text)
    if document.fatal:
        raise ConfigError(reading_issues(name, document))
    return name, source, document


def reading_issues(name: str, document: YamlDocument) -> list[ConfigIssue]:
    """The problems met while reading the YAML, as issues of the file ``name``."""
    return [
        ConfigIssue(name, line, format_path(loc), message, document.columns.get(index))
        for index, (loc, line, message) in enumerate(document.problems)
    ]


def config_from_dict(
    data: dict[str, Any], *, source: str = "<built-in>", base_dir: Path | None = None
) -> LoadedConfig:
    """Validate config ``data`` (e.g. built by quick mode) exactly as a file would be.

    ``source`` names it in error messages; relative paths resolve against ``base_dir``
    (default: the current directory).
    """
    directory = (base_dir or Path.cwd()).resolve()
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(source, None, "", "the config must be a mapping of keys")])
    config, secrets = _validate(data, directory, source, {}, [], set())
    return LoadedConfig(config, None, secrets)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the config file, for ``bastion schema`` and editor completion."""
    schema = Config.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "bastion configuration"
    return schema


def _validate(
    data: dict[str, Any],
    directory: Path,
    name: str,
    lines: dict[Loc, int],
    issues: list[ConfigIssue],
    failed: set[Loc],
) -> tuple[Config, frozenset[str]]:
    """Substitute secrets and validate; raise ``ConfigError`` with ``issues`` and any new ones.

    ``failed`` holds key paths already reported as broken: later errors about them are noise.
    """
    # Top-level "x-..." keys hold YAML anchors for reuse (as in docker compose); not settings.
    data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
    substitution = substitute(data, directory)
    failed = failed | substitution.failed
    secrets = frozenset(substitution.secrets)
    for loc, message in substitution.problems:
        issues.append(ConfigIssue(name, line_of(loc, lines), format_path(loc), message))
    config: Config | None = None
    try:
        with hiding(secrets):
            config = Config.model_validate(substitution.data, context={BASE_DIR_KEY: directory})
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(error["loc"])
            if any(loc[: len(broken)] == broken for broken in failed):
                continue  # e.g. the value still holds a placeholder; its problem is listed
            path, message = describe_error(error)
            issues.append(ConfigIssue(name, line_of(loc, lines), format_path(path), message))
    if issues or config is None:
        raise ConfigError(
            ConfigIssue(i.file, i.line, i.path, redact(i.message, secrets), i.column)
            for i in _in_file_order(issues)
        )
    return config, secrets


def _in_file_order(issues: Iterable[ConfigIssue]) -> list[ConfigIssue]:
    unique = list(dict.fromkeys(issues))
    return sorted(unique, key=lambda issue: (issue.line is None, issue.line or 0))
