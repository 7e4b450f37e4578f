"""The config: loads and compiles as ``bastion run`` would, without issuing a certificate."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING

from bastion.config import ConfigError, LoadedConfig, load_config
from bastion.doctor.result import Finding, fail, passed, warn

if TYPE_CHECKING:
    from bastion.doctor.context import DoctorContext

__all__ = ["check_config"]

_FIX = "correct the lines named above (bastion check -c FILE shows the same), then run again"


def _compile(loaded: LoadedConfig, offline: bool) -> list[str]:
    """Compile the plan the way ``bastion run`` does but only to check it: no local CA, no
    certificate, nothing written to the data dir; OpenAPI documents by URL are fetched
    unless offline. Returns the compiler's warnings."""
    from bastion.plan import compile_plan
    from bastion.proxy.pool import PoolRegistry

    loop = asyncio.new_event_loop()
    try:
        plan = compile_plan(
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
    return list(plan.warnings)


def check_config(ctx: DoctorContext) -> Iterator[Finding]:
    if ctx.loaded is None:
        try:
            ctx.loaded = load_config(ctx.config_path)
        except ConfigError as exc:
            yield fail(str(exc), _FIX)
            return
    config = ctx.loaded.config
    try:
        warnings = _compile(ctx.loaded, ctx.offline)
    except ConfigError as exc:
        ctx.loaded = None
        yield fail(str(exc), _FIX)
        return
    except (OSError, ValueError) as exc:
        ctx.loaded = None
        yield fail(
            f"{ctx.config_path}: the config loads but does not compile: {exc}",
            "correct the file or the files it names; bastion run would stop here too",
        )
        return
    sites = len(config.sites)
    routes = sum(len(site.routes) for site in config.sites)
    where = ctx.loaded.source or ctx.config_path
    yield passed(
        f"{where} loads and compiles: {sites} site{'s' * (sites != 1)}, "
        f"{routes} route{'s' * (routes != 1)}"
    )
    for text in warnings:
        yield warn(text)
