"""Build bastion with its request path compiled by mypyc when it can, pure Python when not.

The metadata lives in pyproject.toml; this file only decides the extension modules.
One source serves both builds: mypyc compiles the modules of `HOT` (the request path, chosen
by profiling the proxy under load, see docs/compiled.md) into C extensions placed beside
their .py files in the wheel; every other module, and every module of a pure build, runs as
Python. The build is pure when

- ``BASTION_PURE=1`` is set (any value other than empty or ``0``),
- the install is editable (``pip install -e``): a development checkout always runs its sources,
  never a compiled copy that an edit would not change,
- mypyc cannot be imported, or no C compiler can build an extension against this Python
  (checked by compiling a tiny one first), or compiling the generated C fails.

``BASTION_BUILD_VERBOSE=1`` prints why a build is pure.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import tempfile
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent

# The modules compiled by mypyc, relative to src/. A module joins this list only if the
# whole test suite passes against the compiled build (`make test-compiled`); docs/compiled.md
# says what mypyc asks of a module's code.
HOT = [
    "bastion/http1/server.py",
    "bastion/http1/head.py",
    "bastion/http1/response.py",
    "bastion/http1/closing.py",
    "bastion/http1/state.py",
    "bastion/http/request.py",
    "bastion/http/dispatch.py",
    "bastion/http/wheel.py",
    "bastion/http/settings.py",
    "bastion/http/ids.py",
    # the base class every Downstream derives from: called through its method table
    "bastion/http/downstream.py",
    "bastion/http/problem.py",
    # the plan as dispatch sees it (base classes, for the same reason), and its routes
    "bastion/http/router.py",
    "bastion/plan/routes.py",
    "bastion/proxy/exchange.py",
    "bastion/proxy/attempts.py",
    "bastion/proxy/base.py",
    "bastion/proxy/tunnel.py",
    "bastion/proxy/pool.py",
    "bastion/proxy/response_head.py",
    "bastion/proxy/raw_head.py",
    "bastion/proxy/headers.py",
    "bastion/proxy/handler.py",
    # the endpoint and member state the exchange reads and writes per request
    "bastion/balance/endpoint.py",
    "bastion/balance/balancer.py",
    "bastion/balance/policies.py",
    # not hot, but it derives from Exchange: see proxy/base.py
    "bastion/handlers/s3.py",
    "bastion/routing.py",
    "bastion/plan/runtime.py",
    "bastion/proxy/tracing.py",
    "bastion/observe/tap.py",
    "bastion/observe/aggregate.py",
    # the access log's line, built once a request when the log is on
    "bastion/observe/accesslog.py",
    # a route's policies around its handler: on every request of a route that has any
    "bastion/policies/chain.py",
    "bastion/policies/auth_keys.py",
    "bastion/policies/ratelimit.py",
    "bastion/policies/headers.py",
    # header lines a route's rules add (Template.render), and its response edit
    "bastion/policies/fields.py",
    # the in-process rate-limit counters (MemoryLimitStore.take_rate: every rate-limited
    # request); open to the interpreted subclass that saves them (state/persist.py)
    "bastion/state/limits.py",
    "bastion/http2/engine.py",
    "bastion/http2/sending.py",
    "bastion/http2/errors.py",
    "bastion/http2/encoder.py",
    "bastion/http2/headers.py",
    "bastion/http2/frames.py",
    "bastion/http2/guard.py",
    "bastion/http2/state.py",
    "bastion/http2/output.py",
    "bastion/http2/events.py",
    "bastion/http2/connection.py",
    "bastion/http2/stream.py",
    "bastion/http2/uploads.py",
    "bastion/http2/decoder.py",
]

# Extension modules written in C by hand (relative to this file), built with the compiled
# build only: each file says why, and raw_head.py and http/joining.py hold the Python
# twins a pure build runs.
C_MODULES = [
    ("bastion.proxy._rawhead", "src/bastion/proxy/_rawhead.c"),
    ("bastion.http._join", "src/bastion/http/_join.c"),
]


def _say(message: str) -> None:
    if os.environ.get("BASTION_BUILD_VERBOSE", "") not in ("", "0"):
        print(f"bastion build: {message}", file=sys.stderr)


def _editable() -> bool:
    # setuptools runs `editable_wheel` for `pip install -e` (PEP 660), `develop` for the old way
    return any(arg in ("editable_wheel", "develop") for arg in sys.argv[1:])


def _metadata_only() -> bool:
    # pip asks for the build requirements and the metadata first (`egg_info`, `dist_info`):
    # they do not depend on the extensions, and mypyc's analysis takes a while
    commands = set(sys.argv[1:])
    return bool(commands & {"egg_info", "dist_info"}) and not commands & {
        "bdist_wheel",
        "build",
        "build_ext",
        "install",
        "develop",
        "editable_wheel",
    }


def _can_compile() -> bool:
    """Whether a C compiler builds an extension against this Python's headers."""
    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.sysconfig import customize_compiler

    compiler = new_compiler()
    customize_compiler(compiler)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "probe.c"
        source.write_text("#include <Python.h>\nint bastion_probe(void) { return 0; }\n")
        try:
            compiler.compile(
                [str(source)],
                output_dir=tmp,
                include_dirs=[sysconfig.get_paths()["include"]],
            )
        except Exception as e:  # CompileError, or no compiler executable at all
            _say(f"no working C compiler ({e})")
            return False
    return True


def _ext_modules() -> list:
    if os.environ.get("BASTION_PURE", "") not in ("", "0"):
        _say("BASTION_PURE is set: pure Python")
        return []
    if _metadata_only():
        return []
    if _editable():
        _say("editable install: pure Python (the sources run as they are edited)")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as e:
        _say(f"mypyc is not available ({e}): pure Python")
        return []
    if not _can_compile():
        return []
    cwd = os.getcwd()
    os.chdir(ROOT)  # mypyc reads [tool.mypy] of pyproject.toml and names modules from src/
    try:
        modules = mypycify(
            [f"src/{path}" for path in HOT], opt_level="3", debug_level="0", group_name="bastion"
        )
    finally:
        os.chdir(cwd)
    # the hand-written C of the compiled build (each has a Python twin, used by a pure build)
    return [*modules, *(Extension(name, [source]) for name, source in C_MODULES)]


class OptionalBuildExt(build_ext):
    """Compile the extensions; if any fails, install none (a pure build) rather than fail the
    install or leave half of the modules compiled against a missing shared runtime."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:
            print(f"bastion build: compiling failed ({e}); installing pure Python", file=sys.stderr)
            for ext in self.extensions:
                built = Path(self.get_ext_fullpath(ext.name))
                built.unlink(missing_ok=True)
            self.extensions = []


setup(ext_modules=_ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
