"""Operational logging: one line per event on stderr, quiet at INFO."""

from __future__ import annotations

import logging
import sys
import time


class _Formatter(logging.Formatter):
    converter = time.gmtime  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%SZ")


def setup_logging(level: str = "info") -> None:
    root = logging.getLogger("bastion")
    root.setLevel(level.upper())
    if not any(getattr(h, "_bastion", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Formatter())
        handler._bastion = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.propagate = False
