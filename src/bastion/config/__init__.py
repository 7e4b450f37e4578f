"""bastion's configuration: a YAML file becomes validated, typed, frozen models.

``load_config(path)`` returns a ``LoadedConfig`` (the ``Config``, its source file and the
substituted secret values) or raises ``ConfigError`` listing every problem, each with the file,
line and key path. ``config_from_dict`` validates built-in configs the same way.

The names below are imported when first used, not with the package: a serving process
imports ``bastion.config.errors``, ``.addresses`` and the other plain modules without
pydantic and the models (``bastion.config.handoff`` says why), and only a process that
validates a config pays for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import bastion.config.noplugins  # noqa: F401  (first: before any model is defined)

if TYPE_CHECKING:
    from bastion.config.addresses import Address, UpstreamAddress
    from bastion.config.errors import ConfigError, ConfigIssue
    from bastion.config.loaded import LoadedConfig
    from bastion.config.loader import config_from_dict, json_schema, load_config
    from bastion.config.matching import RoutePath
    from bastion.config.models import AccessLog, Config, Limits, Listen, ServerTimeouts
    from bastion.config.sites import Redirect, Respond, Route, Site, Static
    from bastion.config.tls_models import Hsts, TlsFiles
    from bastion.config.upstream import Proxy, ProxyTimeouts

# name -> the module that defines it
_HOMES = {
    "Address": "addresses",
    "UpstreamAddress": "addresses",
    "ConfigError": "errors",
    "ConfigIssue": "errors",
    "LoadedConfig": "loaded",
    "config_from_dict": "loader",
    "json_schema": "loader",
    "load_config": "loader",
    "RoutePath": "matching",
    "AccessLog": "models",
    "Config": "models",
    "Limits": "models",
    "Listen": "models",
    "ServerTimeouts": "models",
    "Redirect": "sites",
    "Respond": "sites",
    "Route": "sites",
    "Site": "sites",
    "Static": "sites",
    "Hsts": "tls_models",
    "TlsFiles": "tls_models",
    "Proxy": "upstream",
    "ProxyTimeouts": "upstream",
}

__all__ = [
    "AccessLog",
    "Address",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "Hsts",
    "Limits",
    "Listen",
    "LoadedConfig",
    "Proxy",
    "ProxyTimeouts",
    "Redirect",
    "Respond",
    "Route",
    "RoutePath",
    "ServerTimeouts",
    "Site",
    "Static",
    "TlsFiles",
    "UpstreamAddress",
    "config_from_dict",
    "json_schema",
    "load_config",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'bastion.config' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"bastion.config.{home}"), name)
    globals()[name] = value  # found by the next lookup without this function
    return value
