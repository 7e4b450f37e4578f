"""The body policies' settings: documented, described, and their shorthands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from bastion.config.models import Route
from bastion.config.policy_body import Compress, Validation

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
MODELS: list[type[BaseModel]] = [Validation, Compress]


@pytest.mark.parametrize(
    ("model", "key"), [(m.__name__, key) for m in MODELS for key in m.model_fields]
)
def test_key_is_documented(model: str, key: str) -> None:
    text = DOC.read_text(encoding="utf-8")
    assert re.search(rf"\| `(\w+\.)?{key}` \|", text), f"{model}.{key} has no row"


def test_every_field_has_a_description() -> None:
    assert [
        f"{m.__name__}.{k}" for m in MODELS for k, f in m.model_fields.items() if not f.description
    ] == []


def test_shorthands_and_limits() -> None:
    base = {"path": "/", "respond": {}}
    assert Route.model_validate(base | {"compress": True}).compress == Compress()
    assert Route.model_validate(base | {"compress": False}).compress == Compress(enabled=False)
    assert Route.model_validate(base | {"max_body": "64KiB"}).max_body == 65536
    with pytest.raises(ValidationError):
        Route.model_validate(base | {"max_body": 0})
    with pytest.raises(ValidationError, match="exactly one of openapi and json_schema"):
        Route.model_validate(base | {"validation": {"json_schema": {}, "openapi": "https://x/"}})
    with pytest.raises(ValidationError, match="starts with /"):
        Validation(json_schema={}, base_path="api")
