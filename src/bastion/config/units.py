"""Durations, sizes and rates as operators write them: ``5s``, ``250ms``, ``1h30m``, ``16KiB``,
``10/s``.

Pure functions, no pydantic: each takes the raw YAML value and returns seconds (float),
bytes (int) or (count, seconds), or raises ``ValueError`` with a message that names the
accepted forms.
"""

from __future__ import annotations

import math
import re

from bastion.config.show import show

__all__ = ["parse_duration", "parse_rate", "parse_size"]

_DURATION_UNITS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
    "y": 365 * 86400.0,  # for HSTS max_age: "1y"
}
# One or more "<number><unit>" parts: "1h30m", "1.5s". "ms" is listed before "m" so that the
# alternation prefers it.
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_DURATION_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w|y))+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")

_DURATION_HINT = "expected a duration like 5s, 250ms or 1m"

# Binary units (KiB, and nginx-style k/m/g) are powers of 1024; SI units (KB, MB, GB) are
# powers of 1000. Lower- and upper-case single letters both mean the binary unit, as in nginx.
_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "B": 1,
    "k": 1024,
    "K": 1024,
    "KiB": 1024,
    "KB": 1000,
    "m": 1024**2,
    "M": 1024**2,
    "MiB": 1024**2,
    "MB": 1000**2,
    "g": 1024**3,
    "G": 1024**3,
    "GiB": 1024**3,
    "GB": 1000**3,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)")
_SIZE_HINT = "expected a size like 512, 16KiB, 10MiB, 1GiB, 16KB or 16k"


def parse_duration(value: object) -> float:
    """Return ``value`` in seconds. Numbers are seconds; strings use ms, s, m, h, d, w, y parts."""
    if isinstance(value, bool):
        raise ValueError(f"{_DURATION_HINT}, got {show(value)}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        elif text.startswith("-"):
            raise ValueError(f"a duration must not be negative, got {show(value)}")
        elif _DURATION_WHOLE.fullmatch(text):
            seconds = sum(
                float(number) * _DURATION_UNITS[unit]
                for number, unit in _DURATION_PART.findall(text)
            )
        else:
            raise ValueError(f"{_DURATION_HINT}, got {show(value)}")
    else:
        raise ValueError(f"{_DURATION_HINT}, got {show(value)}")
    if not math.isfinite(seconds):
        raise ValueError(f"a duration must be a finite number, got {show(value)}")
    if seconds < 0:
        raise ValueError(f"a duration must not be negative, got {show(value)}")
    return seconds


def parse_size(value: object) -> int:
    """Return ``value`` in bytes. Integers are bytes; strings may carry a unit."""
    if isinstance(value, bool):
        raise ValueError(f"{_SIZE_HINT}, got {show(value)}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size must not be negative, got {value}")
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):
            raise ValueError(f"a size must not be negative, got {show(value)}")
        match = _SIZE.fullmatch(text)
        if match and match.group(2) in _SIZE_UNITS:
            number, unit = match.groups()
            # Fractions are allowed ("1.5MiB"); the result is rounded down to whole bytes.
            return int(float(number) * _SIZE_UNITS[unit])
    raise ValueError(f"{_SIZE_HINT}, got {show(value)}")


_PERIODS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
            "h": 3600.0, "hour": 3600.0, "d": 86400.0, "day": 86400.0}  # fmt: skip
_RATE_HINT = "expected a rate like 10/s, 100/m, 5000/h, 10000/day or 50/10s"


def parse_rate(value: object) -> tuple[int, float]:
    """``"10/s"`` → (10, 1.0): the count and the period in seconds."""
    if not isinstance(value, str) or value.count("/") != 1:
        raise ValueError(f"{_RATE_HINT}, got {show(value)}")
    count_text, period_text = (part.strip() for part in value.split("/"))
    if not count_text.isdigit() or int(count_text) < 1:
        raise ValueError(f"{_RATE_HINT} (a whole number of requests >= 1), got {show(value)}")
    period = _PERIODS.get(period_text.lower())
    if period is None:
        try:
            period = parse_duration(period_text)
        except ValueError:
            raise ValueError(f"{_RATE_HINT}, got {show(value)}") from None
        if period <= 0:
            raise ValueError(f"{_RATE_HINT} (a period above zero), got {show(value)}")
    return int(count_text), period
