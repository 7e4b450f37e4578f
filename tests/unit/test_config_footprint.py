"""Loading a config keeps modules the gateway never needs out of its memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

_PROBE = """
import sys
from bastion.config import load_config
load_config(sys.argv[1])
print(" ".join(m for m in ("importlib.metadata", "difflib", "configparser") if m in sys.modules))
"""


def _loaded_after_loading(config: Path) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(config)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return out.stdout.split()


def test_a_valid_config_loads_without_plugin_lookup_or_error_helpers() -> None:
    """pydantic's plugin lookup (importlib.metadata, about 2 MB), the "did you mean"
    matcher and the AWS credentials parser are not imported by a valid config."""
    assert _loaded_after_loading(EXAMPLES / "public-api.yaml") == []


def test_the_models_still_validate_and_suggest(tmp_path: Path) -> None:
    """With the plugin lookup replaced, models validate as before, and an unknown key
    still gets its suggestion."""
    bad = tmp_path / "bastion.yaml"
    bad.write_text("listen: {http: 127.0.0.1:8080}\nsites:\n  - hosts: ['*']\n    rutes: []\n")
    out = subprocess.run(
        [sys.executable, "-m", "bastion", "check", "-c", str(bad)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode != 0
    assert "did you mean 'routes'" in out.stderr + out.stdout
