"""bastion: an HTTPS reverse proxy and API gateway for APIs on your own machines."""

__version__ = "0.1.0"

# A module of the request path that a compiled build has as a C extension (setup.py's HOT)
_COMPILED_PROBE = "bastion.http1.server"


def build_kind() -> str:
    """Which build runs: ``"compiled (mypyc)"`` when the request path was compiled by mypyc
    from these sources, ``"pure Python"`` when it runs as Python (a pure build, an editable
    install, or sources put ahead of an installed build on ``PYTHONPATH``). docs/compiled.md."""
    from importlib.util import find_spec

    spec = find_spec(_COMPILED_PROBE)
    origin = spec.origin if spec is not None else None
    return "pure Python" if origin is None or origin.endswith(".py") else "compiled (mypyc)"
