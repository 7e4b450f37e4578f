"""The process that validates a config for a serving process (``bastion.config.handoff``
starts it and says why).

``--file PATH`` loads PATH as ``load_config`` does; ``--built`` validates the pickled
``(data, source, base_dir)`` on stdin as ``config_from_dict`` does. The answer, pickled on
the channel it is given after ``handoff.MARK`` and the stamp of its config code:
``("ok", LoadedConfig)`` with the config as ``bastion.config.plain`` nodes, or
``("error", ConfigError)``. pydantic and the
models are imported inside the functions: the process points its stdout elsewhere first.
"""

from __future__ import annotations

import pickle
import sys
from typing import Any, BinaryIO

from bastion.config.errors import ConfigError
from bastion.config.loaded import LoadedConfig
from bastion.config.plain import Secret, node

__all__ = ["freeze", "handed_over", "main"]


def freeze(value: Any) -> Any:
    """``value`` with every model turned into its node and every ``SecretStr`` into a
    ``Secret``; other values are kept (they are plain: str, numbers, paths, addresses)."""
    from pydantic import BaseModel, SecretStr

    def plain(value: Any) -> Any:
        if isinstance(value, BaseModel):
            lineage = tuple(
                c.__name__
                for c in type(value).__mro__
                if issubclass(c, BaseModel) and c.__module__.startswith("bastion.")
            )
            return node(lineage, {k: plain(v) for k, v in value.__dict__.items()})
        if isinstance(value, SecretStr):
            return Secret(value.get_secret_value())
        if isinstance(value, list | tuple | set | frozenset):
            return type(value)(plain(v) for v in value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(value)


def handed_over(loaded: LoadedConfig) -> LoadedConfig:
    """``loaded`` as a serving process gets it: plain nodes, and the JSON view made here."""
    return LoadedConfig(
        freeze(loaded.config),
        loaded.source,
        loaded.secrets,
        dict(loaded.lines),
        loaded.config.model_dump(mode="json"),
    )


def main(argv: list[str], answer: BinaryIO) -> int:
    from bastion.config.handoff import MARK, stamp
    from bastion.config.loader import config_from_dict, load_config

    mode = argv[0] if argv else ""
    if not ((mode == "--file" and len(argv) == 2) or (mode == "--built" and len(argv) == 1)):
        print("usage: (bastion.config.child) --file CONFIG | --built", file=sys.stderr)
        return 2
    result: tuple[str, Any]
    try:
        if mode == "--built":
            data, source, base_dir = pickle.loads(sys.stdin.buffer.read())
            loaded = config_from_dict(data, source=source, base_dir=base_dir)
        else:
            loaded = load_config(argv[1])
        result = ("ok", handed_over(loaded))
    except ConfigError as exc:
        result = ("error", exc)
    try:
        answer.write(MARK + stamp().encode() + pickle.dumps(result, pickle.HIGHEST_PROTOCOL))
        answer.flush()
    except BrokenPipeError:
        pass  # the gateway stopped meanwhile: nobody waits for the answer
    return 0
