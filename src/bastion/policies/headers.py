"""Header rules: edits of the forwarded request (with secret injection) and of the route's
answers, and the security-headers preset.

Values are compiled once into templates: constant bytes, or a list of constant parts and
per-request getters for the placeholders. ``{env.NAME}`` is read when the plan is compiled.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bastion.config.defaults import sts_value
from bastion.http.request import Request
from bastion.policies.base import ResponseHead, real_client_ip
from bastion.policies.fields import Fields, Getter, Template, field_line

if TYPE_CHECKING:
    from bastion.config.policy_traffic import HeaderRules, SecurityHeaders
    from bastion.plan.context import BuildContext, RouteSpec

__all__ = [
    "RequestHeaderPolicy",
    "ResponseHeaderPolicy",
    "SecurityHeadersPolicy",
    "Template",
    "compile_template",
    "merge_rules",
]

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


def compile_template(text: str, trusted: Callable[[str], bool] | None) -> Template:
    getters: dict[str, Getter] = {
        "client_ip": (lambda r: real_client_ip(r, trusted).encode("latin-1"))
        if trusted is not None
        else (lambda r: r.client_ip.encode("latin-1")),
        "consumer": lambda r: r.consumer.encode("latin-1", "replace"),
        "request_id": lambda r: r.request_id.encode("latin-1", "replace"),
        "host": lambda r: r.host.encode("latin-1", "replace"),
        "method": lambda r: r.method.encode("latin-1"),
        "path": lambda r: r.path.encode("latin-1", "replace"),
    }
    parts: list[bytes | Getter] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        literal = text[position : match.start()]
        position = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            literal += token[0]
            _append(parts, literal.encode("latin-1", "replace"))
            continue
        _append(parts, literal.encode("latin-1", "replace"))
        name = (match.group(1) or "").strip()
        if name.startswith("env."):
            _append(parts, os.environ.get(name[4:], "").encode("latin-1", "replace"))
        else:
            parts.append(getters[name])
    _append(parts, text[position:].encode("latin-1", "replace"))
    if all(isinstance(p, bytes) for p in parts):
        return Template(b"".join(p for p in parts if isinstance(p, bytes)), [])
    return Template(None, parts)


def _append(parts: list[bytes | Getter], data: bytes) -> None:
    if not data:
        return
    if parts and isinstance(parts[-1], bytes):
        parts[-1] = parts[-1] + data
    else:
        parts.append(data)


@dataclass(frozen=True, slots=True)
class Rules:
    """A site's header rules followed by a route's (``merge_rules``)."""

    remove: Sequence[str] = ()
    set: Mapping[str, str] = field(default_factory=dict)
    add: Mapping[str, Sequence[str]] = field(default_factory=dict)
    inject: Mapping[str, Any] = field(default_factory=dict)
    """Request rules only: field name -> a secret (``get_secret_value()``)."""


def merge_rules(first: HeaderRules | None, then: HeaderRules | None) -> Rules | None:
    """The site's rules followed by the route's: a route's set of a field replaces the
    site's set and add of it."""
    if first is None and then is None:
        return None
    empty = Rules()
    a = first if first is not None else empty
    b = then if then is not None else empty
    overridden = {name.lower() for name in b.set}
    return Rules(
        [*a.remove, *b.remove],
        {**{k: v for k, v in a.set.items() if k.lower() not in overridden}, **b.set},
        {**{k: v for k, v in a.add.items() if k.lower() not in overridden}, **b.add},
        {**getattr(a, "inject", {}), **getattr(b, "inject", {})},
    )


class _Names:
    """Field names to remove: exact lowercase names and 'prefix*' patterns."""

    __slots__ = ("exact", "prefixes")

    def __init__(self, names: Sequence[str]) -> None:
        self.exact = [n.lower().encode() for n in names if not n.endswith("*")]
        self.prefixes = tuple(n[:-1].lower().encode() for n in names if n.endswith("*"))

    def __bool__(self) -> bool:
        return bool(self.exact or self.prefixes)


class RequestHeaderPolicy:
    """Rules for the request sent upstream; runs last in the request phase, so no other
    policy ever sees an injected secret.

    Removed fields, and the client's copies of fields set or injected, are dropped by name
    through ``upstream_drops``, which the route's chain applies to every request; the added
    lines are prepared once, so a request renders only its placeholders."""

    is_async = False

    def __init__(self, rules: Rules, trusted: Callable[[str], bool] | None) -> None:
        self.remove = _Names(rules.remove)
        set_ = [(n.encode(), compile_template(v, trusted)) for n, v in rules.set.items()]
        add = [(n.encode(), compile_template(v, trusted))
               for n, values in rules.add.items() for v in values]  # fmt: skip
        # secrets: kept as bytes only here, never in a message
        inject = [(n.encode(), v.get_secret_value().encode("latin-1"))
                  for n, v in rules.inject.items()]  # fmt: skip
        self.upstream_drops = frozenset(
            [*self.remove.exact, *(n.lower() for n, _ in set_), *(n.lower() for n, _ in inject)]
        )
        lines = [field_line(n, t) for n, t in [*set_, *add]]
        lines += [n + b": " + v + b"\r\n" for n, v in inject]
        self.added = Template.of(lines)

    def on_request(self, req: Request) -> None:
        prefixes = self.remove.prefixes
        if prefixes:
            for lname, _, _ in req.headers:
                if lname.startswith(prefixes):
                    req.drop_upstream_header(lname)
        req.upstream_extra += self.added.render(req)


class ResponseHeaderPolicy:
    """Rules for every answer of the route."""

    def __init__(self, rules: Rules, trusted: Callable[[str], bool] | None) -> None:
        self.remove = _Names(rules.remove)
        self.set = [(n.encode(), compile_template(v, trusted)) for n, v in rules.set.items()]
        self.add = [(n.encode(), compile_template(v, trusted))
                    for n, values in rules.add.items() for v in values]  # fmt: skip

        # one pass drops the removed fields and those set anew
        self.drop = frozenset([*self.remove.exact, *(n.lower() for n, _ in self.set)])

    def field_edit(self) -> Fields:
        return self.drop, self.remove.prefixes, [*self.set, *self.add]

    def on_response(self, req: Request, head: ResponseHead) -> None:
        _drop(head, self.drop, self.remove.prefixes)
        fields = head.fields
        for name, template in self.set:
            fields.append([name, template.render(req)])
        for name, template in self.add:
            fields.append([name, template.render(req)])


class SecurityHeadersPolicy:
    """The preset: strip banners and debug fields, then set the browser security fields."""

    def __init__(self, preset: SecurityHeaders, https: bool) -> None:
        self.strip = _Names(preset.strip)
        fields: list[tuple[bytes, bytes]] = []
        if preset.hsts is not False and https:
            fields.append((b"Strict-Transport-Security", sts_value(preset.hsts).encode()))
        if preset.content_type_options:
            fields.append((b"X-Content-Type-Options", b"nosniff"))
        if preset.referrer_policy:
            fields.append((b"Referrer-Policy", preset.referrer_policy.encode()))
        if preset.frame_options:
            fields.append((b"X-Frame-Options", preset.frame_options.encode()))
        if preset.csp:
            name = b"Content-Security-Policy" + (b"-Report-Only" if preset.csp_report_only else b"")
            fields.append((name, preset.csp.encode()))
        self.fields = [(n, n.lower(), v) for n, v in fields]
        self.keep = preset.keep_backend_values
        replaced = [] if self.keep else [lname for _, lname, _ in self.fields]
        self.drop = frozenset([*self.strip.exact, *replaced])

    def field_edit(self) -> Fields | None:
        if self.keep:
            return None  # a field is set only when the backend sent none: needs the head
        return self.drop, self.strip.prefixes, [(name, value) for name, _, value in self.fields]

    def on_response(self, req: Request, head: ResponseHead) -> None:
        _drop(head, self.drop, self.strip.prefixes)
        if self.keep:
            for name, lname, value in self.fields:
                if head.get(lname) is None:
                    head.add(name, value)
        else:
            head.fields.extend([name, value] for name, _, value in self.fields)


def _drop(head: ResponseHead, names: frozenset[bytes], prefixes: tuple[bytes, ...]) -> None:
    """Remove the fields named (lowercase) or starting with one of ``prefixes``, in one pass."""
    if prefixes:
        head.fields = [
            f
            for f in head.fields
            if (n := f[0].lower()) not in names and not n.startswith(prefixes)
        ]
    elif names:
        head.fields = [f for f in head.fields if f[0].lower() not in names]


def build_request_headers(spec: RouteSpec, ctx: BuildContext) -> RequestHeaderPolicy | None:
    """Request header rules and secret injection: the site's, then the route's."""
    route, site = spec.route, spec.site
    rules = merge_rules(
        None if site.headers is None else site.headers.request,
        None if route.headers is None else route.headers.request,
    )
    if rules is None or not (rules.remove or rules.set or rules.add or rules.inject):
        return None
    return RequestHeaderPolicy(rules, ctx.trusted)


def build_security_headers(spec: RouteSpec, ctx: BuildContext) -> SecurityHeadersPolicy | None:
    """The security-headers preset (the route's, else the site's), or None."""
    site = spec.site
    preset = spec.route.security_headers or site.security_headers
    if preset is None:
        return None
    # the site's own hsts key already sends Strict-Transport-Security
    policy = SecurityHeadersPolicy(preset, spec.facts.secure and site.hsts is False)
    # `security_headers: false` (or a preset with every field off) sends and strips nothing
    return policy if policy.fields or policy.strip else None


def build_response_headers(spec: RouteSpec, ctx: BuildContext) -> ResponseHeaderPolicy | None:
    """Response header rules: the site's, then the route's."""
    route, site = spec.route, spec.site
    rules = merge_rules(
        None if site.headers is None else site.headers.response,
        None if route.headers is None else route.headers.response,
    )
    if rules is None or not (rules.remove or rules.set or rules.add):
        return None
    return ResponseHeaderPolicy(rules, ctx.trusted)
