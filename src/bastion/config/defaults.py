"""Settings' defaults and small rules that the code that serves needs as well as the
models: kept here, without pydantic, so a serving process reads them without the models
(``bastion.config.plain`` says why)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

__all__ = ["ACTIONS", "HSTS_MAX_AGE", "default_policy"]

ACTIONS = ("proxy", "redirect", "static", "respond", "s3")
"""What a route does with a request; exactly one per route."""

HSTS_MAX_AGE = 365 * 86400.0
"""Strict-Transport-Security's max-age when ``hsts: true`` (a site's or the preset's)."""


class _Zoned(Protocol):
    @property
    def zone(self) -> str | None: ...


def default_policy(endpoints: Iterable[_Zoned]) -> str:
    """round_robin, or peak_ewma for a pool that spans zones (regions)."""
    zones = {e.zone for e in endpoints if e.zone is not None}
    return "peak_ewma" if len(zones) > 1 else "round_robin"
