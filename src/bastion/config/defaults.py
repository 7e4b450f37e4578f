"""Settings' defaults and small rules that the code that serves needs as well as the
models: kept here, without pydantic, so a serving process reads them without the models
(``bastion.config.plain`` says why)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

__all__ = ["ACTIONS", "HSTS_MAX_AGE", "default_policy", "sts_value"]

ACTIONS = ("proxy", "redirect", "static", "respond", "s3")
"""What a route does with a request; exactly one per route."""

HSTS_MAX_AGE = 365 * 86400.0
"""Strict-Transport-Security's max-age when ``hsts: true`` (a site's or the preset's)."""


class _Sts(Protocol):
    @property
    def max_age(self) -> float: ...
    @property
    def include_subdomains(self) -> bool: ...
    @property
    def preload(self) -> bool: ...


def sts_value(hsts: _Sts | bool) -> str:
    """Strict-Transport-Security's value for a site's ``hsts`` or the preset's (``True``:
    the defaults)."""
    if isinstance(hsts, bool):  # true: the defaults (false sends no field: the callers')
        return f"max-age={int(HSTS_MAX_AGE)}"
    value = f"max-age={int(hsts.max_age)}"
    if hsts.include_subdomains:
        value += "; includeSubDomains"
    if hsts.preload:
        value += "; preload"
    return value


class _Zoned(Protocol):
    @property
    def zone(self) -> str | None: ...


def default_policy(endpoints: Iterable[_Zoned]) -> str:
    """round_robin, or peak_ewma for a pool that spans zones (regions)."""
    zones = {e.zone for e in endpoints if e.zone is not None}
    return "peak_ewma" if len(zones) > 1 else "round_robin"
