"""docs/configuration.md documents every key the models accept."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from bastion.config import balancing, models, policy_auth, policy_body, policy_traffic

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

# every model of the config package's modules (the policy models live in modules of their own)
MODULES = (models, balancing, policy_auth, policy_body, policy_traffic)
MODELS = [
    value
    for module in MODULES
    for value in vars(module).values()
    if isinstance(value, type)
    and issubclass(value, BaseModel)
    and value.__module__ == module.__name__
    and not value.__name__.startswith("_")
]


def test_every_model_is_checked() -> None:
    exported = {
        name
        for name in models.__all__
        if isinstance(getattr(models, name), type) and issubclass(getattr(models, name), BaseModel)
    }
    names = {m.__name__ for m in MODELS}
    assert len(MODELS) >= 25  # discovery must not come up empty
    assert exported <= names
    assert {"Auth", "JwtAuth", "Validation", "Compress", "RateLimit"} <= names


@pytest.mark.parametrize(
    ("model", "key"), [(m.__name__, key) for m in MODELS for key in m.model_fields]
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
