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
        "saas-and-bucket.yaml",
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_loads(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the variables an example's header asks the reader to export
    monkeypatch.setenv("S3_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("S3_SECRET_ACCESS_KEY", "example-secret")
    monkeypatch.setenv("SAAS_TOKEN", "example-saas-token")
    loaded = load_config(path)
    assert loaded.config.sites
