"""Every shipped example is a valid configuration."""

from pathlib import Path

import pytest

from bastion.config import load_config

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert {p.name for p in EXAMPLES} >= {
        "single-api.yaml",
        "api-static-websocket.yaml",
        "unix-socket.yaml",
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_loads(path: Path) -> None:
    loaded = load_config(path)
    assert loaded.config.sites
