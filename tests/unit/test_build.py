"""Which build of bastion the suite runs against (docs/compiled.md).

`make test-compiled` sets ``BASTION_EXPECT_BUILD=compiled``: then every module that setup.py
compiles must come from the installed C extension, never from this checkout's src/ (the
suite would have tested pure Python and said nothing about the compiled build)."""

from __future__ import annotations

import ast
import os
from importlib.util import find_spec
from pathlib import Path

import bastion

ROOT = Path(__file__).resolve().parents[2]


def compiled_modules() -> list[str]:
    """setup.py's HOT list, as module names."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "HOT" for t in node.targets
        ):
            paths = ast.literal_eval(node.value)
            return [p.removesuffix(".py").replace("/", ".") for p in paths]
    raise AssertionError("setup.py names no HOT modules")


def test_the_build_is_the_one_expected() -> None:
    expected = os.environ.get("BASTION_EXPECT_BUILD", "")
    kind = bastion.build_kind()
    origins = {m: (spec.origin if (spec := find_spec(m)) else None) for m in compiled_modules()}
    if expected == "compiled":
        assert kind == "compiled (mypyc)"
        for module, origin in origins.items():
            assert origin is not None and not origin.endswith(".py"), (module, origin)
            assert not origin.startswith(str(ROOT / "src")), (module, origin)
    elif expected == "pure":
        assert kind == "pure Python"
        assert all(o is not None and o.endswith(".py") for o in origins.values()), origins
    else:
        assert kind in ("compiled (mypyc)", "pure Python")


def test_each_build_records_traffic_with_its_own_tap() -> None:
    # counting at once is cheap compiled and dear interpreted; a row per request the
    # reverse (observe/rows.py): a worker must get the tap of the build it runs
    from bastion.observe.recorder import request_tap

    tap = type(request_tap(detailed=True)).__name__
    spec = find_spec("bastion.observe.tap")
    assert spec is not None and spec.origin is not None
    compiled = not spec.origin.endswith(".py")
    assert tap == ("RequestTap" if compiled else "RowTap")
    expected = os.environ.get("BASTION_EXPECT_BUILD", "")
    if expected:
        assert tap == ("RequestTap" if expected == "compiled" else "RowTap")


def test_compiled_modules_exist_and_leave_out_the_ones_being_rewritten() -> None:
    modules = compiled_modules()
    assert modules and all(
        (ROOT / "src" / (m.replace(".", "/") + ".py")).is_file() for m in modules
    )
    # the Redis-backed state is not compiled (yet): see docs/compiled.md
    assert not any(m.startswith("bastion.state.redis") for m in modules)
