"""The command line's parser and help formatters, without `shutil`.

argparse makes a help formatter for every argument it adds (to check its metavar), and
its formatter imports `shutil` (with `bz2` and `lzma`, about 0.5 MiB) to read the width
of the terminal. These formatters read the width as `shutil.get_terminal_size` does, so
that a gateway's process does not hold those modules for the sake of its command line.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["HelpFormatter", "Parser", "RawDescriptionHelpFormatter", "terminal_columns"]


def terminal_columns() -> int:
    """The terminal's width in columns, as `shutil.get_terminal_size().columns`: $COLUMNS,
    else the width of the terminal on stdout, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    try:
        size = os.get_terminal_size(sys.__stdout__.fileno())  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80
    return size.columns or 80


class _Width:
    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:
            width = terminal_columns() - 2  # argparse's own margin
        super().__init__(prog, indent_increment, max_help_position, width)  # type: ignore[call-arg]


class HelpFormatter(_Width, argparse.HelpFormatter):
    """argparse's default formatter."""


class RawDescriptionHelpFormatter(_Width, argparse.RawDescriptionHelpFormatter):
    """argparse's formatter that keeps the description's and epilog's lines."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose formatter is `HelpFormatter` unless told otherwise; the
    parsers of its subcommands are of its class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
