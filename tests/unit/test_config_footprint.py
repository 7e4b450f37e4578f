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


_BUILT = """
import sys
from pydantic import BaseModel
from pydantic._internal._mock_val_ser import MockValSer
from bastion.config import load_config
load_config(sys.argv[1])
seen, todo = set(), [BaseModel]
while todo:
    for sub in todo.pop().__subclasses__():
        if sub not in seen:
            seen.add(sub)
            todo.append(sub)
print(" ".join(sorted(
    c.__qualname__ for c in seen
    if c.__module__.startswith("bastion.config")
    and not isinstance(c.__dict__.get("__pydantic_validator__"), MockValSer)
)))
"""


def test_loading_builds_the_root_validator_only() -> None:
    """The models are built lazily and the defaults of the sections left out are validated
    by the root's validator: a worker does not hold a validator (and serializer) per
    model, each with its own copy of its nested models'. (The security-headers preset
    that switches them off is an instance built at import.)"""
    out = subprocess.run(
        [sys.executable, "-c", _BUILT, str(EXAMPLES / "public-api.yaml")],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert out.stdout.split() == ["Config", "SecurityHeaders"]


def test_a_section_left_out_equals_its_model_defaults() -> None:
    """A section's default, validated by the root, is the section's model with its
    defaults, as when the default was made by calling the model."""
    from pydantic import BaseModel

    from bastion.config import config_from_dict

    route = {"path": "/", "proxy": {"upstreams": ["http://127.0.0.1:1"]}}
    config = config_from_dict({"sites": [{"hosts": ["*"], "routes": [route]}]}).config
    proxy = config.sites[0].routes[0].proxy
    assert proxy is not None
    sections = [(config, name) for name in type(config).model_fields]
    sections += [(proxy, name) for name in type(proxy).model_fields]
    checked = 0
    for owner, name in sections:
        value = getattr(owner, name)
        if isinstance(value, BaseModel) and type(owner).model_fields[name].default_factory:
            assert value == type(value)(), name
            assert value.model_fields_set == set(), name
            checked += 1
    assert checked >= 18
