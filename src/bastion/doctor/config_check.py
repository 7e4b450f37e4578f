"""The config: loads and compiles as ``bastion run`` would, without issuing a certificate."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from bastion.config import ConfigError, LoadedConfig, load_config
from bastion.doctor.result import Finding, fail, passed, warn

if TYPE_CHECKING:
    from bastion.doctor.context import DoctorContext

__all__ = ["check_config"]

_FIX = "correct the lines named above (bastion check -c FILE shows the same), then run again"


def _compile(loaded: LoadedConfig, offline: bool) -> list[str]:
    """The compiler's warnings, from a compile with no side effects (``compile_for_check``)."""
    from bastion.plan.checking import compile_for_check

    return list(compile_for_check(loaded, offline=offline).warnings)


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
