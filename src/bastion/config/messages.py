"""Pydantic's validation errors, reworded for operators.

Each error becomes ``(path, message)``: missing and unknown keys are reported on the mapping
that holds them (with a did-you-mean suggestion for unknown keys), type errors say what was
expected and what was found, and pydantic's ``Value error,`` prefixes and URLs are dropped.
"""

from __future__ import annotations

import re
import types
from typing import Annotated, Any, Union, cast, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from bastion.config.errors import Loc
from bastion.config.models import Config
from bastion.config.show import show

__all__ = ["describe_error"]

_EXPECTED = {
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "model_type": "a mapping of keys",
    "model_attributes_type": "a mapping of keys",
    "dict_type": "a mapping of keys",
    "dataclass_type": "a mapping of keys",
    "path_type": "a file path",
}

_BOUNDS = {
    "greater_than_equal": ("ge", "must be at least {}"),
    "greater_than": ("gt", "must be greater than {}"),
    "less_than_equal": ("le", "must be at most {}"),
    "less_than": ("lt", "must be less than {}"),
}


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated[...]`` and ``X | None`` down to the type that holds the keys."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The model class whose keys live at ``loc`` in the config, if any."""
    annotation: Any = Config
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(part, int):
            if get_origin(annotation) is not list:
                return None
            annotation = get_args(annotation)[0]
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            # (cast: the compiled build's type check may run without pydantic installed,
            # where BaseModel is Any and the issubclass test narrows nothing)
            model = cast("type[BaseModel]", annotation)
            field = model.model_fields.get(part)
            if field is None:
                return None
            annotation = field.annotation
        else:
            return None
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _unknown_key(parent: Loc, key: str) -> str:
    model = _model_at(parent)
    message = f"unknown key {key!r}"
    if model is None:
        return message
    import difflib  # only a config with a mistake needs it: kept out of the gateway's memory

    names = list(model.model_fields)
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return f"{message} (did you mean {close[0]!r}?)"
    return f"{message} (expected one of: {', '.join(names)})"


def _one_of(expected: str) -> str:
    # pydantic says "'a', 'b' or 'c'"; a list reads better after "one of".
    head, sep, last = expected.rpartition(" or ")
    return f"{head}, {last}" if sep else expected


def _clean(message: str) -> str:
    message = re.sub(r"^(Value|Assertion) error, ", "", message)
    return re.sub(r"\s*\[type=.*$|\s*For further information visit \S+", "", message).strip()


def describe_error(error: ErrorDetails) -> tuple[Loc, str]:
    """The key path to report ``error`` at, and its message in operator terms."""
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = show(error.get("input"))
    if kind == "missing" and loc:
        return loc[:-1], f"missing required key {loc[-1]!r}"
    if kind == "extra_forbidden" and loc:
        return loc[:-1], _unknown_key(loc[:-1], str(loc[-1]))
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return loc, _clean(str(ctx["error"]))
    if kind == "literal_error":
        return loc, f"expected one of {_one_of(str(ctx.get('expected')))}, got {got}"
    if kind in _EXPECTED:
        return loc, f"expected {_EXPECTED[kind]}, got {got}"
    if kind in ("too_short", "string_too_short"):
        minimum = ctx.get("min_length", 1)
        if minimum == 1:
            return loc, "must not be empty"
        unit = "characters" if kind == "string_too_short" else "items"
        return loc, f"needs at least {minimum} {unit}"
    if kind in _BOUNDS:
        key, template = _BOUNDS[kind]
        return loc, f"{template.format(show(ctx.get(key)))}, got {got}"
    return loc, _clean(error["msg"])
