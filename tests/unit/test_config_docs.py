"""Every model of every module of the config package is documented in docs/configuration.md
and every field has a description, wherever the model lives (the models are split by topic:
a new module is covered without being listed anywhere)."""

from __future__ import annotations

import importlib
import pkgutil
import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

import bastion.config
from bastion.config.models import Config

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

MODULES = [
    importlib.import_module(f"bastion.config.{info.name}")
    for info in pkgutil.iter_modules(bastion.config.__path__)
]
MODELS = sorted(
    {
        value
        for module in MODULES
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, BaseModel)
        and value.__module__ == module.__name__
        and not value.__name__.startswith("_")
    },
    key=lambda model: (model.__module__, model.__name__),
)


def _models_in(annotation: object) -> set[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {annotation}
    found: set[type[BaseModel]] = set()
    for arg in typing.get_args(annotation):
        found |= _models_in(arg)
    return found


def _reachable(root: type[BaseModel]) -> set[type[BaseModel]]:
    seen: set[type[BaseModel]] = set()
    todo = [root]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for field in model.model_fields.values():
            todo.extend(_models_in(field.annotation))
    return seen


def test_every_model_of_the_config_is_found() -> None:
    reachable = _reachable(Config)
    assert len(reachable) >= 40  # discovery must not come up empty
    assert reachable <= set(MODELS)


@pytest.mark.parametrize(
    ("model", "key"),
    [(f"{m.__module__}.{m.__name__}", key) for m in MODELS for key in m.model_fields],
)
def test_key_is_documented(model: str, key: str) -> None:
    text = DOC.read_text(encoding="utf-8")
    assert re.search(rf"\| `(\w+\.)?{key}` \|", text), f"{model}.{key} has no row in {DOC.name}"


def test_every_field_has_a_description() -> None:
    missing = [
        f"{m.__name__}.{key}"
        for m in MODELS
        for key, field in m.model_fields.items()
        if not field.description
    ]
    assert missing == []
