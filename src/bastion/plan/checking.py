"""Compiling a config only to check it (``bastion check``, ``bastion doctor``)."""

from __future__ import annotations

import asyncio

from bastion.config import ConfigError, LoadedConfig
from bastion.plan.compile import compile_plan
from bastion.plan.runtime import Plan

__all__ = ["compile_for_check"]


def compile_for_check(loaded: LoadedConfig, *, offline: bool = False) -> Plan:
    """The plan of ``loaded``, compiled as the gateway would at start but with no side
    effects: the local CA issues nothing and nothing is written to the data dir.

    Raises ``ConfigError`` (with file, line and key) for what the compiler refuses,
    including an OpenAPI document that cannot be used (fetched unless ``offline``),
    and ``OSError`` for certificate files that do not load."""
    from bastion.proxy.pool import PoolRegistry

    loop = asyncio.new_event_loop()  # pools are bound to a loop; this one only compiles
    try:
        return compile_plan(
            loaded.config,
            PoolRegistry(loop),
            str(loaded.source or "<built-in>"),
            issue_certificates=False,
            checking="offline" if offline else "online",
        )
    except ConfigError as exc:
        raise loaded.locate(exc) from None
    finally:
        loop.close()
