"""bastion's configuration: a YAML file becomes validated, typed, frozen models.

``load_config(path)`` returns a ``LoadedConfig`` (the ``Config``, its source file and the
substituted secret values) or raises ``ConfigError`` listing every problem, each with the file,
line and key path. ``config_from_dict`` validates built-in configs the same way.
"""

import bastion.config.noplugins  # noqa: F401  (first: before any model is defined)
from bastion.config.addresses import Address, UpstreamAddress
from bastion.config.errors import ConfigError, ConfigIssue
from bastion.config.loader import LoadedConfig, config_from_dict, json_schema, load_config
from bastion.config.matching import RoutePath
from bastion.config.models import AccessLog, Config, Limits, Listen, ServerTimeouts
from bastion.config.sites import Redirect, Respond, Route, Site, Static
from bastion.config.tls_models import Hsts, TlsFiles
from bastion.config.upstream import Proxy, ProxyTimeouts

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
