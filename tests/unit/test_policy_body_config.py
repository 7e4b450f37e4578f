"""The body policies' settings: their shorthands and limits (documentation: test_config_docs)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.config.policy_body import Compress, Validation
from bastion.config.sites import Route


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
