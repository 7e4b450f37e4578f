"""Writing YAML text by hand, so that the file can carry comments (PyYAML drops them).

Scalars are written plain when YAML reads them back as the same string, else double-quoted
JSON style (a JSON string is a valid YAML double-quoted scalar), or single-quoted when they
hold backslashes (only ``'`` is escaped there, so a regular expression stays as it is).
Values that came from the document have ``${`` escaped as ``$${``: the config loader would
otherwise read them as environment or file references.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import yaml

from bastion.initconfig.security import EnvRef

__all__ = ["comment", "flow_list", "noted", "scalar"]

COMMENT_COLUMN = 32

# a first character that is no YAML indicator, then none of the flow or comment ones; what
# passes is still read back with YAML before it is written plain
_PLAIN = re.compile(r"[A-Za-z0-9_/=~^.][^#,\[\]{}]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _reads_back(text: str, flow: bool) -> bool:
    try:
        if flow:
            return bool(yaml.safe_load(f"k: [{text}]") == {"k": [text]})
        return bool(yaml.safe_load(f"k: {text}") == {"k": text})
    except yaml.YAMLError:
        return False


def scalar(value: Any, flow: bool = False) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    if not isinstance(value, EnvRef):
        text = text.replace("${", "$${")
    plain = (
        _PLAIN.fullmatch(text) is not None
        and ": " not in text
        and not text.endswith(":")
        and not (flow and ":" in text)
        and text == text.strip()
        and _reads_back(text, flow)
    )
    if plain:
        return text
    if "\\" in text and _CONTROL.search(text) is None:
        # single quotes keep backslashes as they are (regular expressions stay readable)
        return "'" + text.replace("'", "''") + "'"
    return json.dumps(text, ensure_ascii=False)


def flow_list(values: Iterable[Any]) -> str:
    return "[" + ", ".join(scalar(v, flow=True) for v in values) + "]"


def comment(text: str) -> str:
    """`text` made safe for a comment line: one line, no control characters."""
    return _CONTROL.sub(" ", text)


def noted(code: str, note: str) -> str:
    """A line of YAML with a comment after it, comments aligned on one column."""
    return f"{code.ljust(COMMENT_COLUMN - 1)} # {comment(note)}"
