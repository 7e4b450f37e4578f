"""A config validated by another process and handed over as plain objects.

A serving process keeps its config for its whole life, and pydantic with the config's
60 models and PyYAML cost about 12 MiB of it: more than everything else a plain gateway
holds but the interpreter and asyncio. So ``bastion run``, quick mode and every reload
have the config validated by a short-lived child (``bastion.config.child``), which loads
it as ``load_config`` does and writes back either the config as ``bastion.config.plain``
nodes or the ``ConfigError`` with every problem's file, line and key. The serving process
unpickles the answer without importing pydantic. The price: an interpreter started per
start and per reload (a few tenths of a second; a worker's reload waits for it off the
event loop).

The child is this interpreter, run with ``-P`` and given this process's ``sys.path`` less
the current directory (which ``python -m`` puts there): it imports what this process
would, never a module of the directory the gateway was started in (unless bastion itself
came from there). It answers on its stdout, which it points at stderr before importing
anything (only a site hook could write there first: the answer follows ``MARK``), and
says first which config code it ran (``stamp``): after an upgrade in place a reload is
refused, before anything of the answer is unpickled, rather than handing new models to
old code.
Its stderr is the gateway's: a child that fails without an answer leaves its traceback
where the gateway's own would have been, and its parent gets a ``ConfigError`` saying so.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

from bastion.config.errors import ConfigError, ConfigIssue
from bastion.config.loaded import LoadedConfig

__all__ = [
    "MARK",
    "STAMP_SIZE",
    "TIMEOUT",
    "child_command",
    "child_environment",
    "config_from_dict_apart",
    "load_config_apart",
    "read_answer",
    "stamp",
    "too_slow",
]

TIMEOUT = 60.0
"""Seconds a child may take (a ``${file:...}`` on a hung mount must not hold a reload)."""

_PATH_ENV = "BASTION_CHILD_SYS_PATH"
MARK = b"\0bastion-config-answer\0"
"""Starts the answer: what a site hook printed before the child took stdout is skipped.
The stamp (``STAMP_SIZE`` ASCII bytes) follows, then the pickle."""
STAMP_SIZE = 16
# the child's first lines: this process's import path, and stdout kept for the answer
_BOOT = (
    "import json, os, sys\n"
    f"sys.path[:] = json.loads(os.environ.pop({_PATH_ENV!r}))\n"
    "answer = os.fdopen(os.dup(1), 'wb')\n"
    "os.dup2(2, 1)\n"
    "sys.stdout = sys.stderr\n"
    "from bastion.config.child import main\n"
    "sys.exit(main(sys.argv[1:], answer))\n"
)


@cache
def stamp() -> str:
    """Names the config code on disk: the size and time of each module of this package.
    A serving process takes it for its first child, as it starts (its forked workers
    inherit it); a child's differs from its parent's only when the files changed since."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted(here.glob("[!.]*.py")):  # not an editor's lock or backup file
        try:
            info = path.stat()
        except OSError:
            continue
        digest.update(f"{path.name} {info.st_size} {info.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:STAMP_SIZE]


def child_command(*args: str) -> list[str]:
    """The child: ``--file PATH`` validates a file, ``--built`` the pickled ``(data,
    source, base_dir)`` on its stdin (``config_from_dict_apart``). It answers ``MARK``,
    its ``stamp()``, then pickled ``("ok", LoadedConfig)`` or ``("error", ConfigError)``."""
    return [sys.executable, "-P", "-c", _BOOT, *args]


def child_environment() -> dict[str, str]:
    """This process's environment (the file's ${VARIABLES} are read there), with its
    import path for the child, less the current directory unless bastion is there."""
    import bastion

    stamp()  # taken now at the latest, before a child could see newer files
    here = os.getcwd()
    home = os.path.dirname(os.path.dirname(os.path.abspath(bastion.__file__)))
    path = [p for p in sys.path if os.path.abspath(p or ".") != here or here == home]
    return {**os.environ, _PATH_ENV: json.dumps(path)}


def read_answer(source: str | Path, code: int, out: bytes) -> LoadedConfig:
    """The child's config, or its ``ConfigError``; a child that failed without a usable
    answer becomes a ``ConfigError`` too (its traceback went to the gateway's stderr)."""
    why = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
    if code == 0:
        start = out.find(MARK) + len(MARK)
        their_stamp = out[start : start + STAMP_SIZE]
        if start >= len(MARK) and len(their_stamp) == STAMP_SIZE and their_stamp != (
            stamp().encode()
        ):
            raise _failure(
                source,
                "bastion's config code changed on disk since this process started "
                "(an upgrade?): restart it instead of reloading",
            )
        try:
            if start < len(MARK):
                raise EOFError("no answer")
            kind, value = pickle.loads(out[start + STAMP_SIZE :])
        except Exception as exc:
            why = f"its answer could not be read: {type(exc).__name__}"
        else:
            if kind == "ok" and isinstance(value, LoadedConfig):
                return value
            if kind == "error" and isinstance(value, ConfigError):
                raise value
            why = "its answer is not a config"
    raise _failure(
        source,
        "the config could not be validated: the validating process ended without an "
        f"answer ({why}; its output, if any, is above)",
    )


def too_slow(source: str | Path) -> ConfigError:
    """The error of a child that did not answer within ``TIMEOUT`` (it was killed)."""
    return _failure(
        source, f"the config could not be validated in {TIMEOUT:.0f} s (a file that hangs?)"
    )


def _failure(source: str | Path, message: str) -> ConfigError:
    return ConfigError([ConfigIssue(str(source), None, "", message)])


def _run(source: str | Path, args: list[str], request: bytes | None = None) -> LoadedConfig:
    try:
        done = subprocess.run(
            child_command(*args),
            input=request,
            stdin=None if request is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env=child_environment(),
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise too_slow(source) from None
    return read_answer(source, done.returncode, done.stdout)


def load_config_apart(path: str | Path) -> LoadedConfig:
    """``load_config(path)``, done by a child process; raises its ``ConfigError``."""
    return _run(path, ["--file", os.fspath(path)])


def config_from_dict_apart(
    data: dict[str, Any], *, source: str = "<built-in>", base_dir: Path | None = None
) -> LoadedConfig:
    """``config_from_dict``, done by a child process (quick mode's config)."""
    request = pickle.dumps((data, source, base_dir), protocol=pickle.HIGHEST_PROTOCOL)
    return _run(source, ["--built"], request)
