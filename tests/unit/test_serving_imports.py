"""The code a serving process runs never imports pydantic, PyYAML or the config's models:
a child process validates the config and hands it over as plain objects
(``bastion.config.handoff``), which saves a worker about 12 MiB for its whole life.

This is the static half of the guard: every import the serving code makes when it runs
(at module level or inside a function; not under ``if TYPE_CHECKING:``) is checked, so a
module a route loads lazily (S3, JWT, compression) is covered too. The live half is
``tests/integration/test_idle_imports.py``, which looks at a running worker's modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import bastion.config

SRC = Path(__file__).resolve().parents[2] / "src" / "bastion"

# config modules without pydantic or yaml, which serving code may import
PLAIN_CONFIG = {
    "addresses", "defaults", "errors", "handoff", "loaded", "matching", "material",
    "noplugins", "passwords", "plain", "secrets", "show", "state_values", "units",
}  # fmt: skip
FORBIDDEN = ("pydantic", "pydantic_core", "yaml")

# modules of commands that validate a config themselves (check, doctor, init, status...)
# and of the process that validates one for a server; they are not the serving process
NOT_SERVING = (
    "config/", "doctor/", "initconfig/", "cli/", "summary.py", "service_unit.py", "demo.py",
    "demo_traffic.py", "observe/stats/cluster_report.py", "observe/alerts/testsend.py",
    "__main__.py",
)  # fmt: skip
# the commands' modules that a serving process runs: `bastion run` and quick mode
SERVING_CLI = (
    "cli/__init__.py", "cli/serving.py", "cli/common.py", "cli/quick.py",
    "cli/quick_addresses.py", "cli/formatting.py",
)  # fmt: skip
# (module, function) -> why it may: code of those modules that other commands run
ALLOWED = {
    ("cli/common.py", "load"): "validates in-process unless asked for a child's config",
    ("cli/common.py", "operator_settings"): "operator commands read a few keys of the file",
    ("cli/serving.py", "_worth_reloading"): "`bastion reload` checks the file before it signals",
    ("openapi/source.py", ""): "OpenAPI documents may be YAML: a validation route parses them",
}


def _runtime_imports(tree: ast.Module) -> list[tuple[int, str, list[str], str]]:
    """(line, module, names, the top-level function it is in or "") of each import
    outside ``if TYPE_CHECKING:`` blocks."""
    found: list[tuple[int, str, list[str], str]] = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and ast.unparse(child.test) in (
                "TYPE_CHECKING",
                "typing.TYPE_CHECKING",
            ):
                for other in child.orelse:
                    visit(other, where)
                continue
            if isinstance(child, ast.Call):  # import_module("...") with a literal name
                func = child.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                arg = child.args[0] if child.args else None
                if called in ("import_module", "__import__") and isinstance(arg, ast.Constant):
                    found.append((child.lineno, str(arg.value), [], where))
            if isinstance(child, ast.Import):
                found.extend((child.lineno, a.name, [], where) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [a.name for a in child.names]
                found.append((child.lineno, child.module, names, where))
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) and not where:
                visit(child, child.name)
            else:
                visit(child, where)

    visit(tree, "")
    return found


def _problems(module: str, names: list[str]) -> list[str]:
    if module.split(".")[0] in FORBIDDEN:
        return [module]
    if module == "bastion.config" and not names:  # `import bastion.config [as c]`
        return ["bastion.config as a module (import names from it instead)"]
    if module == "bastion" and "config" in names:  # then config.Config: cannot be told
        return ["bastion.config as a module (import names from it instead)"]
    if module == "bastion.config":
        homes = bastion.config._HOMES
        if "*" in names:
            return ["bastion.config.* (imports every model)"]
        return [
            f"bastion.config.{name} (from {homes[name]})"
            for name in names
            if name in homes and homes[name] not in PLAIN_CONFIG
        ]
    if module.startswith("bastion.config."):
        part = module.split(".")[2]
        return [] if part in PLAIN_CONFIG else [module]
    return []


def _serving_modules() -> list[Path]:
    paths = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel in SERVING_CLI or not rel.startswith(NOT_SERVING):
            paths.append(path)
    return paths


def test_serving_code_imports_no_model_and_no_pydantic() -> None:
    found = []
    for path in _serving_modules():
        rel = path.relative_to(SRC).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, module, names, where in _runtime_imports(tree):
            if (rel, where) in ALLOWED or (rel, "") in ALLOWED:
                continue
            found += [f"{rel}:{line}: {p}" for p in _problems(module, names)]
    assert found == [], (
        "a serving process must not import pydantic, yaml or the config's models; read "
        "the config by attribute, import its classes under TYPE_CHECKING, and use "
        "bastion.config.plain (is_a, replaced, fingerprint) or config/defaults.py: "
        + "\n".join(found)
    )


def test_the_plain_config_modules_are_plain() -> None:
    """What serving code may import from config/ imports no pydantic, yaml or model
    itself (``from bastion.config import X`` is lazy, so it counts by X's home)."""
    found = []
    for name in sorted(PLAIN_CONFIG):
        path = SRC / "config" / f"{name}.py"
        for line, module, names, _ in _runtime_imports(ast.parse(path.read_text("utf-8"))):
            found += [f"config/{name}.py:{line}: {p}" for p in _problems(module, names)]
    assert found == []


def test_the_guard_sees_what_it_guards() -> None:
    """The serving code under check includes the worker, the plan, the policies and the
    lazily loaded handlers; and a model import there would be caught."""
    rels = {p.relative_to(SRC).as_posix() for p in _serving_modules()}
    assert {"server/worker.py", "plan/compile.py", "policies/headers.py", "handlers/s3.py",
            "cli/serving.py", "cli/quick.py"} <= rels  # fmt: skip
    assert not rels & {"cli/check.py", "doctor/runner.py", "config/loader.py"}
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from bastion.config.sites import Route\n"
        "if not TYPE_CHECKING:\n    from bastion.config.sites import Site\n"
        "from bastion.config import LoadedConfig, Config\n"
        "from bastion.config import *\n"
        "from bastion import config\n"
        "import bastion.config as c\n"
        "importlib.import_module('bastion.config.models')\n"
        "def f():\n    import yaml\n    from bastion.config.upstream import Proxy\n"
    )
    problems = [p for _, m, n, _ in _runtime_imports(tree) for p in _problems(m, n)]
    assert problems == [
        "bastion.config.sites",
        "bastion.config.Config (from models)",
        "bastion.config.* (imports every model)",
        "bastion.config as a module (import names from it instead)",
        "bastion.config as a module (import names from it instead)",
        "bastion.config.models",
        "yaml",
        "bastion.config.upstream",
    ]
    assert [w for *_, w in _runtime_imports(tree)][-2:] == ["f", "f"]
