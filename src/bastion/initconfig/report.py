"""What ``bastion init`` tells the user once the files are written: what, what to look at,
and the commands that come next."""

from __future__ import annotations

from pathlib import Path

from bastion.initconfig.files import Derived

__all__ = ["report"]


def report(derived: Derived, written: list[Path], name: str, to_stdout: bool) -> list[str]:
    routes = derived.routes or []
    paths = {t for route in routes for t in route.templates}
    summary = f"{len(routes)} routes for {len(paths)} paths" if routes else "one proxy route"
    files = [str(p) for p in written]
    if to_stdout:
        files.insert(0, "the config to stdout")
    lines = [f"wrote {', '.join(files)} ({summary})"]
    if to_stdout and routes:
        lines.append(
            f"note: keep {written[0].name} beside the config: it names it as a relative path"
        )
    lines += [f"note: {warning}" for warning in derived.warnings]
    lines.append("next steps:")
    lines += [
        f"  export {var}=…   # the config refers to it; never written in it" for var in derived.env
    ]
    lines.append(f"  bastion check -c {name}")
    lines.append(f"  bastion doctor -c {name}   # DNS, ports, the app")
    if any(use.method.kind == "api_keys" for route in routes for use in route.access.uses):
        lines.append(f"  bastion keys create --consumer NAME -c {name}   # prints the key once")
    lines.append(f"  bastion run -c {name}")
    return lines
