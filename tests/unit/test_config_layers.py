"""The config package is the bottom layer: it reads YAML into models and checks them, and
does no network I/O. Its modules import only the standard library, pydantic, yaml and
``bastion.config.*`` — never another bastion package (which would tie the loader to the
runtime and make import cycles) nor a network-capable module. Every import counts: module
level, inside a function, under ``if TYPE_CHECKING:``.

``KNOWN`` lists the imports that still break the rule, each with the way out; the list can
only shrink (an entry that no longer occurs fails the test, so that it is removed).
"""

from __future__ import annotations

import ast
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[2] / "src" / "bastion" / "config"

# `ssl` is not among them: loading a certificate pair to check it reads files only.
NETWORK = ("socket", "asyncio", "http.client", "urllib.request", "httpx")
# The bottom layer beside config/: pure loaders of key material (no socket, no loop), which
# the config checks the files it names with.
# http/target.py: a route path is put in canonical form by the very function that puts
# request paths in it.
BELOW = ("bastion.config", "bastion.keymaterial", "bastion.http.target")

KNOWN: dict[tuple[str, str], str] = {}  # none left today


def _imports(tree: ast.AST) -> list[list[str]]:
    """Per import statement (or dynamic import of a literal name), the modules it may load:
    ``from http import client`` may load ``http`` and ``http.client``."""
    found: list[list[str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend([alias.name] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "config modules import absolutely"
            module = node.module or ""
            found.append([module, *(f"{module}.{alias.name}" for alias in node.names)])
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__"):
                arg = node.args[0] if node.args else None
                if isinstance(arg, ast.JoinedStr):  # f"bastion.config.{name}": a config module
                    first = arg.values[0] if arg.values else None
                    assert isinstance(first, ast.Constant), "a dynamic import hides its module"
                    assert str(first.value) == "bastion.config.", "only config modules, by name"
                    found.append(["bastion.config"])
                    continue
                assert isinstance(arg, ast.Constant), "a dynamic import hides what is imported"
                found.append([str(arg.value)])
    return found


def _offending(names: list[str]) -> str | None:
    """What breaks the rule in one import statement (a bastion package outside config, or
    a network module), or None when it is allowed."""
    for name in names:
        inside = any(name == b or name.startswith(b + ".") for b in BELOW)
        if name.startswith("bastion.") and not inside:
            return name
        for module in NETWORK:
            if name == module or name.startswith(module + "."):
                return module
    return None


def _violations() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for path in sorted(CONFIG.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for names in _imports(tree):
            offending = _offending(names)
            if offending is not None:
                found.add((path.relative_to(CONFIG).as_posix(), offending))
    return found


def test_config_imports_nothing_above_it_and_nothing_networked() -> None:
    found = _violations()
    new = sorted(found - KNOWN.keys())
    assert new == [], (
        "config/ may import only the standard library (no network modules), pydantic, "
        f"yaml, bastion.config.*, bastion.keymaterial.* and bastion.http.target: {new}"
    )


def test_known_exceptions_are_still_needed() -> None:
    gone = sorted(KNOWN.keys() - _violations())
    assert gone == [], f"no longer imported, remove from KNOWN: {gone}"


def test_the_check_sees_every_kind_of_import() -> None:
    source = """
import socket
from http import client
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from bastion.plan import Plan
def f():
    from bastion.policies.basic import check_hash
    import importlib
    importlib.import_module("bastion.state")
from bastion.config.show import show
from bastion.config import models
from bastion import state
"""
    found = {_offending(names) for names in _imports(ast.parse(source))}
    assert found == {
        "socket", "http.client", "bastion.plan", "bastion.policies.basic", "bastion.state", None
    }  # fmt: skip
