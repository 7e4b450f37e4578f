"""``python -m bastion.config.child PATH``: validate a config for a serving process.

Loads PATH as ``load_config`` does (``-``: validates the pickled ``(data, source,
base_dir)`` on stdin as ``config_from_dict`` does) and writes to stdout, pickled,
``("ok", LoadedConfig)`` with the config as ``bastion.config.plain`` nodes, or
``("error", ConfigError)``.
``bastion.config.handoff`` is the other end and says why.
"""

from __future__ import annotations

import pickle
import sys
from typing import Any

from pydantic import BaseModel, SecretStr

from bastion.config.errors import ConfigError
from bastion.config.loaded import LoadedConfig
from bastion.config.loader import config_from_dict, load_config
from bastion.config.plain import Secret, node

__all__ = ["freeze", "handed_over", "main"]


def freeze(value: Any) -> Any:
    """``value`` with every model turned into its node and every ``SecretStr`` into a
    ``Secret``; other values are kept (they are plain: str, numbers, paths, addresses)."""
    if isinstance(value, BaseModel):
        lineage = tuple(
            c.__name__
            for c in type(value).__mro__
            if issubclass(c, BaseModel) and c.__module__.startswith("bastion.")
        )
        return node(lineage, {k: freeze(v) for k, v in value.__dict__.items()})
    if isinstance(value, SecretStr):
        return Secret(value.get_secret_value())
    if isinstance(value, list | tuple | set | frozenset):
        return type(value)(freeze(v) for v in value)
    if isinstance(value, dict):
        return {k: freeze(v) for k, v in value.items()}
    return value


def handed_over(loaded: LoadedConfig) -> LoadedConfig:
    """``loaded`` as a serving process gets it: plain nodes, and the JSON view made here."""
    return LoadedConfig(
        freeze(loaded.config),
        loaded.source,
        loaded.secrets,
        dict(loaded.lines),
        loaded.config.model_dump(mode="json"),
    )


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bastion.config.child CONFIG", file=sys.stderr)
        return 2
    answer: tuple[str, Any]
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # stdout carries the answer alone, whatever loading prints
    try:
        if argv[0] == "-":
            data, source, base_dir = pickle.loads(sys.stdin.buffer.read())
            loaded = config_from_dict(data, source=source, base_dir=base_dir)
        else:
            loaded = load_config(argv[0])
        answer = ("ok", handed_over(loaded))
    except ConfigError as exc:
        answer = ("error", exc)
    out.write(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
