"""The document's operations → bastion routes.

bastion looks routes up by exact path, then by longest prefix (both dictionary probes), then
tries regular expressions in file order. So:

- a path without templates (``/items``) becomes an exact route (``= /items``);
- templated paths become one prefix route per literal start (``/items/{id}`` and
  ``/items/{id}/tags`` → ``/items/``), and the route's ``validation`` (the same document,
  ``unknown_operation: 405``) refuses the paths and methods under it that the document does
  not describe;
- a prefix whose paths ask different credentials for the same method (``GET /users/{id}``
  public, ``GET /users/{id}/private`` with a key) cannot be one route: its templated paths
  become anchored regular expressions instead, one per path, as does every shorter prefix
  that would otherwise catch their requests first.

Within one path, methods that ask different credentials become separate routes on the
same path with their ``methods``; a method no route lists gets 405 from the router.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from bastion.initconfig.security import Access, SchemeBook
from bastion.openapi.operations import METHODS
from bastion.openapi.schemas import resolve

__all__ = ["Operation", "RoutePlan", "operations", "plan_routes"]

_TEMPLATE = re.compile(r"\{[^{}/]*\}")
# characters left as they are in a route path; the rest is percent-encoded, as a client
# would send it (bastion compares canonical forms)
_SAFE = "/:@!$&'()*+,=-._~"


@dataclass(frozen=True)
class Operation:
    template: str
    method: str
    access: Access


@dataclass
class RoutePlan:
    path: str
    """In bastion's syntax: ``= /items``, ``/items/``, ``~ ^/items/[^/]+$``."""
    methods: list[str]
    access: Access
    templates: dict[str, list[str]] = field(default_factory=dict)
    """The document's paths this route serves, with their methods (for the comment)."""
    notes: list[str] = field(default_factory=list)
    """What its operations leave to the app, for the comment."""


def operations(doc: dict[str, Any], book: SchemeBook) -> list[Operation]:
    found: list[Operation] = []
    default = doc.get("security")
    for template, raw in (doc.get("paths") or {}).items():
        item = resolve(doc, raw)
        if not isinstance(item, dict):
            continue
        for method in METHODS:
            op = item.get(method)
            if method == "trace" or not isinstance(op, dict):
                continue  # bastion answers TRACE with 501 before any route
            requirements = op.get("security", default)
            found.append(Operation(template, method.upper(), book.access(requirements)))
    return found


def _encoded(text: str) -> str:
    return quote(text, safe=_SAFE + "%")


def _literal_start(template: str) -> str:
    return template[: template.index("{")]


def _segment_regex(segment: str) -> str:
    parts = _TEMPLATE.split(segment)
    return "[^/]+".join(re.escape(_encoded(p)) for p in parts)


def _may_reach(template: str, prefix: str) -> bool:
    """Whether a request path starting with `prefix` could match `template` (may say yes
    when it could not; never no when it could)."""
    t_segs, p_segs = template.split("/"), prefix.split("/")
    if len(t_segs) < len(p_segs):
        return False
    for t, p in zip(t_segs, p_segs[:-1], strict=False):
        if not re.fullmatch(_segment_regex(t), _encoded(p)):
            return False
    last, partial = t_segs[len(p_segs) - 1], p_segs[-1]
    lead = last[: last.index("{")] if "{" in last else last
    if "{" not in last:
        return last.startswith(partial)
    return lead.startswith(partial) or partial.startswith(lead)


def _regex_path(template: str) -> str:
    pieces = _TEMPLATE.split(template)
    return "~ ^" + "[^/]+".join(re.escape(_encoded(p)) for p in pieces) + "$"


def _by_access(ops: list[Operation]) -> dict[Access, list[str]]:
    grouped: dict[Access, list[str]] = {}
    for op in ops:
        methods = grouped.setdefault(op.access, [])
        if op.method not in methods:
            methods.append(op.method)
    return grouped


def _routes_for(path: str, ops: list[Operation]) -> list[RoutePlan]:
    templates: dict[str, list[str]] = {}
    for op in ops:
        templates.setdefault(op.template, []).append(op.method)
    out = []
    for access, methods in _by_access(ops).items():
        mine = {t: [m for m in ms if m in methods] for t, ms in templates.items()}
        mine = {t: ms for t, ms in mine.items() if ms}
        notes = [n for op in ops if op.access == access for n in op.access.notes]
        out.append(RoutePlan(path, _ordered(methods), access, mine, list(dict.fromkeys(notes))))
    return out


def _ordered(methods: list[str]) -> list[str]:
    return sorted(methods, key=lambda m: METHODS.index(m.lower()))


def _conflicts(ops: list[Operation]) -> bool:
    """Two operations of one method asking different credentials."""
    seen: dict[str, Access] = {}
    return any(seen.setdefault(op.method, op.access) != op.access for op in ops)


def plan_routes(ops: list[Operation]) -> list[RoutePlan]:
    exact = [op for op in ops if "{" not in op.template]
    templated = [op for op in ops if "{" in op.template]
    starts = sorted({_literal_start(op.template) for op in templated}, key=len, reverse=True)

    def reach(prefix: str) -> list[Operation]:
        # a request under a longer prefix goes to that prefix's route, and a path whose own
        # literal start is longer than `prefix` only ever produces such requests
        longer = [s for s in starts if len(s) > len(prefix) and s.startswith(prefix)]
        return [
            op
            for op in templated
            if _may_reach(op.template, prefix)
            and not any(_literal_start(op.template).startswith(s) for s in longer)
        ]

    clashing = [s for s in starts if _conflicts(reach(s))]
    demoted = {s for s in starts if any(c.startswith(s) for c in clashing)}
    routes: list[RoutePlan] = []
    by_path: dict[str, list[Operation]] = {}
    for op in exact:
        by_path.setdefault("= " + _encoded(op.template), []).append(op)
    for start in sorted(set(starts) - demoted):
        by_path["/" if start == "/" else _encoded(start)] = reach(start)
    for path in sorted(by_path, key=lambda p: p.removeprefix("= ")):
        routes.extend(_routes_for(path, by_path[path]))
    # regular expressions are tried in file order: the most literal segments first, as
    # the OpenAPI matching of the validation does
    regex_ops = [op for op in templated if _literal_start(op.template) in demoted]
    regex_templates = list(dict.fromkeys(op.template for op in regex_ops))
    regex_templates.sort(key=lambda t: -sum(1 for s in t.split("/") if "{" not in s))
    for template in regex_templates:
        group = [op for op in regex_ops if op.template == template]
        routes.extend(_routes_for(_regex_path(template), group))
    return routes
