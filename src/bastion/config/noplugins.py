"""Keeps pydantic's plugin lookup out of the gateway's memory.

The first time pydantic builds a validator it imports ``pydantic.plugin._loader``, which
imports ``importlib.metadata`` (with email, zipfile, csv and more: about 2 MB resident)
to look for plugins among every installed package's entry points. bastion's config
models use no plugins, and the gateway keeps this memory for its whole life, so the
lookup module is given in advance as one that finds none. Importing this module has that
effect; it must run before the first model is defined (``bastion.config`` imports it
first). If pydantic stops importing that module, this does nothing at all.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterable
from typing import Any

_LOADER = "pydantic.plugin._loader"


def _no_plugins() -> Iterable[Any]:
    return ()


if _LOADER not in sys.modules:
    _stub = types.ModuleType(_LOADER, "pydantic plugins: none (see bastion.config.noplugins)")
    _stub.get_plugins = _no_plugins  # type: ignore[attr-defined]
    sys.modules[_LOADER] = _stub
