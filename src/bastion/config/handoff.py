"""A config validated by another process and handed over as plain objects.

A serving process keeps its config for its whole life, and pydantic with the config's 74
models and PyYAML cost about 12 MiB of it: more than everything else a plain gateway
holds but the interpreter and asyncio. So ``bastion run``, quick mode and every reload
have the config validated by a short-lived child (``python -m bastion.config.child``),
which loads it exactly as ``load_config`` does and writes back either the config as
``bastion.config.plain`` nodes or the ``ConfigError`` with every problem's file, line and
key. The serving process unpickles the answer without importing pydantic. The price: an
interpreter started per start and per reload (a few tenths of a second; a worker's reload
waits for it off the event loop).

The child's stderr is the gateway's: a child that fails without an answer (a bug, a
signal) leaves its traceback where the gateway's own would have been, and its parent gets
a ``ConfigError`` that says so.
"""

from __future__ import annotations

import os
import pickle
import site
import subprocess
import sys
from pathlib import Path
from typing import Any

from bastion.config.errors import ConfigError, ConfigIssue
from bastion.config.loaded import LoadedConfig

__all__ = [
    "child_command",
    "child_environment",
    "config_from_dict_apart",
    "load_config_apart",
    "read_answer",
]

_CHILD = "bastion.config.child"


def child_command(path: str | Path) -> list[str]:
    """The child that validates the file at ``path``; ``-`` reads a built config from its
    stdin instead (``config_from_dict_apart``). It answers on stdout, pickled:
    ``("ok", LoadedConfig)`` or ``("error", ConfigError)``."""
    return [sys.executable, "-m", _CHILD, os.fspath(path)]


def child_environment() -> dict[str, str]:
    """This process's environment (the file's ${VARIABLES} are read there). When this
    bastion was not imported from an installed package (a development checkout's ``src``),
    that directory goes first on the child's path, so the child validates with the same
    code; an installed one is found by the same interpreter anyway."""
    import bastion

    home = os.path.dirname(os.path.dirname(os.path.abspath(bastion.__file__)))
    env = dict(os.environ)
    installed = {os.path.abspath(p) for p in [*site.getsitepackages(), site.getusersitepackages()]}
    if home not in installed:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (home, env.get("PYTHONPATH")) if p)
    return env


def read_answer(source: str | Path, code: int, out: bytes) -> LoadedConfig:
    """The child's config, or its ``ConfigError``; a child that failed without answering
    becomes a ``ConfigError`` too (its traceback went to the gateway's stderr)."""
    if code == 0 and out:
        kind, value = pickle.loads(out)
        if kind == "ok" and isinstance(value, LoadedConfig):
            return value
        if kind == "error" and isinstance(value, ConfigError):
            raise value
    why = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
    raise ConfigError(
        [
            ConfigIssue(
                str(source),
                None,
                "",
                f"the config could not be validated: the validating process ({_CHILD}) "
                f"ended without an answer ({why}; its output, if any, is above)",
            )
        ]
    )


def load_config_apart(path: str | Path) -> LoadedConfig:
    """``load_config(path)``, done by a child process; raises its ``ConfigError``."""
    done = subprocess.run(
        child_command(path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        env=child_environment(),
    )
    return read_answer(path, done.returncode, done.stdout)


def config_from_dict_apart(
    data: dict[str, Any], *, source: str = "<built-in>", base_dir: Path | None = None
) -> LoadedConfig:
    """``config_from_dict``, done by a child process (quick mode's config)."""
    request = pickle.dumps((data, source, base_dir), protocol=pickle.HIGHEST_PROTOCOL)
    done = subprocess.run(
        child_command("-"), input=request, stdout=subprocess.PIPE, env=child_environment()
    )
    return read_answer(source, done.returncode, done.stdout)
