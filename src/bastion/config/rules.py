"""Checks that span several fields or list items: one action per route, strip_prefix, duplicate
routes within a site, duplicate hosts across sites.

They run on the raw (pre-validation) data from a ``mode="wrap"`` model validator, so they are
reported together with every field error instead of only once all fields are valid, and each
carries the location of the offending item, not of the whole model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError, ValidatorFunctionWrapHandler
from pydantic_core import ErrorDetails, InitErrorDetails

from bastion.config.addresses import Address, parse_address
from bastion.config.defaults import ACTIONS
from bastion.config.matching import (
    RoutePath,
    is_private_acme,
    parse_host_pattern,
    parse_method,
    parse_route_path,
    uses_acme,
)
from bastion.config.show import show
from bastion.http.target import has_path_parameter

__all__ = ["config_rules", "route_rules", "site_rules", "validate_with_rules"]

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str]

_BOOL: TypeAdapter[bool] = TypeAdapter(bool)


def validate_with_rules(
    title: str,
    data: Any,
    handler: ValidatorFunctionWrapHandler,
    rules: Callable[[Any], list[Problem]],
) -> Any:
    """Run pydantic's validation and ``rules(data)``; raise one error holding both lists."""
    errors: list[ErrorDetails] = []
    result = None
    try:
        result = handler(data)
    except ValidationError as exc:
        errors.extend(exc.errors())
    problems = rules(data) if isinstance(data, dict) else []
    if not errors and not problems:
        return result
    details = [_value_error(loc, message) for loc, message in problems]
    try:
        raise ValidationError.from_exception_data(title, [*map(_details, errors), *details])
    except (KeyError, TypeError):
        # An error type pydantic cannot rebuild: keep its text as a plain value error.
        kept = [_value_error(tuple(e["loc"]), e["msg"]) for e in errors]
        raise ValidationError.from_exception_data(title, [*kept, *details]) from None


def _details(error: ErrorDetails) -> InitErrorDetails:
    details = InitErrorDetails(type=error["type"], loc=error["loc"], input=error["input"])
    if "ctx" in error:
        details["ctx"] = error["ctx"]
    return details


def _value_error(loc: Loc, message: str) -> InitErrorDetails:
    return InitErrorDetails(
        type="value_error", loc=loc, input=None, ctx={"error": ValueError(message)}
    )


def _join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _try_path(value: Any) -> RoutePath | None:
    try:
        return parse_route_path(value)
    except ValueError:
        return None


def _as_bool(value: Any) -> bool | None:
    try:
        return _BOOL.validate_python(value)
    except ValidationError:
        return None


def route_rules(route: dict[str, Any]) -> list[Problem]:
    """One action per route; strip_prefix only on prefix routes that proxy or serve s3; a
    path with ';' only on a route that keeps path parameters."""
    problems: list[Problem] = []
    given = [name for name in ACTIONS if route.get(name) is not None]
    if len(given) != 1:
        message = "a route needs exactly one of proxy, redirect, static, respond, s3"
        if given:
            message += f"; this one has {_join(given)}"
        problems.append(((), message))
    if route.get("cache") is not None and given and given != ["proxy"]:
        problems.append((("cache",), f"cache only applies to proxy routes, not {given[0]}"))
    if _as_bool(route.get("strip_prefix")):
        path = _try_path(route.get("path"))
        if path is not None and path.kind != "prefix":
            article = "an" if path.kind == "exact" else "a"
            problems.append(
                (
                    ("strip_prefix",),
                    f"strip_prefix only applies to prefix routes; {show(path.text)} is "
                    f"{article} {path.kind} match",
                )
            )
        elif len(given) == 1 and given[0] not in ("proxy", "s3"):
            problems.append(
                (
                    ("strip_prefix",),
                    f"strip_prefix only applies to proxy and s3 routes, not {given[0]}",
                )
            )
    problems += _cache_sharing(route)
    path = _try_path(route.get("path"))
    if (
        path is not None
        and path.kind != "regex"
        and has_path_parameter(path.value)
        and route.get("path_parameters") != "keep"
    ):
        # every request it matches would be refused (400): it could never answer
        problems.append(
            (
                ("path",),
                f"{show(path.text)} holds a ';' path parameter, which is refused unless the "
                "route sets path_parameters: keep",
            )
        )
    return problems


def _cache_sharing(route: dict[str, Any]) -> list[Problem]:
    """The cache's sharing settings that apply only with auth, or only without it: set on the
    other kind of route they would do nothing, silently."""
    cache = route.get("cache")
    if not isinstance(cache, dict):
        return []
    key = cache.get("key")
    if route.get("auth") is not None:
        if _as_bool(cache.get("allow_authorization")):
            return [
                (
                    ("cache", "allow_authorization"),
                    "allow_authorization is for routes without auth; on this route answers "
                    "are kept per consumer, and shared: true stores them once for all",
                )
            ]
        return []
    problems: list[Problem] = []
    if _as_bool(cache.get("shared")):
        problems.append(
            (("cache", "shared"), "shared only applies to routes with auth (its consumers)")
        )
    if isinstance(key, dict) and _as_bool(key.get("consumer")):
        problems.append(
            (
                ("cache", "key", "consumer"),
                "key.consumer only applies to routes with auth (its consumers)",
            )
        )
    return problems


def _methods(value: Any) -> tuple[bool, frozenset[str] | None]:
    """``(valid, methods)``; methods None means every method (no ``methods`` key)."""
    if value is None:
        return True, None
    if not isinstance(value, list):
        return False, None
    try:
        return True, frozenset(parse_method(m) for m in value)
    except ValueError:
        return False, None


def _overlap(later: frozenset[str] | None, earlier: frozenset[str] | None) -> str | None:
    """Why ``later`` can never serve some of its methods because ``earlier`` (same path, earlier
    in the file) takes them; None when it can. A route without methods after routes with methods
    on the same path is a fallback for the remaining methods, which is fine.
    """
    if earlier is None:
        return "both for every method" if later is None else "it takes every method"
    if later is None:
        return None
    common = later & earlier
    return f"both for {', '.join(sorted(common))}" if common else None


def _host_list(site: dict[str, Any]) -> list[tuple[Loc, str]]:
    """``(loc, normalised host)`` for each valid host of a site (default ``*`` when omitted)."""
    if "hosts" not in site:
        return [((), "*")]
    hosts = site["hosts"]
    if isinstance(hosts, str):
        hosts = [hosts]
    if not isinstance(hosts, list):
        return []
    result: list[tuple[Loc, str]] = []
    for index, host in enumerate(hosts):
        try:
            result.append((("hosts", index), parse_host_pattern(host)))
        except ValueError:
            continue
    return result


def site_rules(site: dict[str, Any]) -> list[Problem]:
    """No host listed twice in a site; no route shadowed by an earlier one with the same path
    and overlapping methods."""
    problems: list[Problem] = []
    seen_hosts: dict[str, Loc] = {}
    for loc, host in _host_list(site):
        if host in seen_hosts:
            problems.append((loc, f"host {show(host)} is listed twice in this site"))
        seen_hosts.setdefault(host, loc)
    routes = site.get("routes")
    if not isinstance(routes, list):
        return problems
    seen: list[tuple[int, RoutePath, frozenset[str] | None]] = []
    for index, route in enumerate(routes):
        if not isinstance(route, dict):
            continue
        path = _try_path(route.get("path"))
        valid, methods = _methods(route.get("methods"))
        if path is None or not valid:
            continue
        for other_index, other_path, other_methods in seen:
            detail = _overlap(methods, other_methods) if other_path == path else None
            if detail is None:
                continue
            problems.append(
                (
                    ("routes", index, "path"),
                    f"route {show(path.text)} duplicates routes[{other_index}] ({detail})",
                )
            )
            break
        seen.append((index, path, methods))
    return problems


def _has_https(config: dict[str, Any]) -> bool:
    listen = config.get("listen")
    return isinstance(listen, dict) and bool(listen.get("https"))


def _tls_mode(value: Any, https: bool) -> str | None:
    """The site's effective TLS mode from its raw ``tls`` value; None when invalid (its
    field error is reported by pydantic)."""
    if value is None:
        return "default" if https else "off"
    if value is False:
        return "off"
    if isinstance(value, dict):
        return "files"
    if isinstance(value, str) and value.strip().lower() in ("off", "internal", "auto"):
        return value.strip().lower()
    return None


def tls_rules(config: dict[str, Any], sites: list[Any]) -> list[Problem]:
    """TLS needs an https listener; ACME wildcards need DNS-01 (an acme.dns_hook); HSTS
    needs TLS."""
    problems: list[Problem] = []
    https = _has_https(config)
    acme = config.get("acme")
    private = is_private_acme(acme.get("directory") if isinstance(acme, dict) else None)
    dns_hook = isinstance(acme, dict) and acme.get("dns_hook") is not None
    for index, site in enumerate(sites):
        if not isinstance(site, dict):
            continue
        mode = _tls_mode(site.get("tls"), https)
        if mode is None:
            continue
        if mode != "off" and not https:
            problems.append(
                (
                    ("sites", index, "tls"),
                    f"tls {mode} needs an https listener: add listen.https (like "
                    "127.0.0.1:8443), or set tls: off",
                )
            )
        if mode in ("auto", "default") and https and not dns_hook:
            wild = [h for _, h in _host_list(site) if h.startswith("*.") and uses_acme(h, private)]
            if wild:
                how = "tls: auto" if mode == "auto" else "an https listener (tls defaults to auto)"
                problems.append(
                    (
                        ("sites", index, "tls") if mode == "auto" else ("sites", index, "hosts"),
                        f"{how} with the wildcard {show(wild[0])}: wildcard certificates need "
                        "the ACME DNS-01 challenge: set acme.dns_hook (see docs/https.md), use "
                        "tls: {cert: FILE, key: FILE} or list the names",
                    )
                )
        hsts = site.get("hsts")
        if mode == "off" and hsts not in (None, False) and _as_bool(hsts) is not False:
            problems.append(
                (("sites", index, "hsts"), "hsts is only sent over HTTPS; this site has tls off")
            )
    return problems


def _addresses(value: Any) -> list[Address]:
    found = []
    for item in value if isinstance(value, list) else [value]:
        with contextlib.suppress(ValueError):  # reported by the field's own check
            found.append(parse_address(item))
    return found


def _metrics_rules(config: dict[str, Any]) -> list[Problem]:
    """The metrics listener has an address of its own: on a site's, the metrics would
    either not be served or be served to the world."""
    metrics = config.get("metrics")
    if not isinstance(metrics, dict) or metrics.get("listen") is None:
        return []
    own = _addresses(metrics["listen"])
    listen = config.get("listen")
    listen = listen if isinstance(listen, dict) else {}
    taken = {
        "http": _addresses(listen.get("http", "127.0.0.1:8080")),
        "https": _addresses(listen.get("https", [])),
    }
    for key, addresses in taken.items():
        if own and own[0] in addresses:
            return [
                (
                    ("metrics", "listen"),
                    f"{show(str(own[0]))} is also listen.{key}: the metrics need an "
                    "address of their own",
                )
            ]
    return []


def _cache_rules(config: dict[str, Any]) -> list[Problem]:
    """A cache in Redis needs the Redis server of ``state.redis``."""
    cache = config.get("cache")
    if not isinstance(cache, dict) or cache.get("store") != "redis":
        return []
    state = config.get("state")
    if isinstance(state, dict) and state.get("redis") is not None:
        return []
    return [
        (
            ("cache", "store"),
            "redis needs state.redis (the server every instance shares): set it, or use "
            "store: memory",
        )
    ]


def config_rules(config: dict[str, Any]) -> list[Problem]:
    """A host belongs to one site only; the TLS rules."""
    problems: list[Problem] = []
    sites = config.get("sites")
    if not isinstance(sites, list):
        return problems
    problems += tls_rules(config, sites)
    problems += _metrics_rules(config)
    problems += _cache_rules(config)
    owners: dict[str, int] = {}
    for index, site in enumerate(sites):
        if not isinstance(site, dict):
            continue
        for loc, host in _host_list(site):
            owner = owners.setdefault(host, index)
            if owner == index:
                continue
            what = f"host {show(host)}" + (
                " (the default when hosts is omitted)" if not loc else ""
            )
            problems.append((("sites", index, *loc), f"{what} is already used by sites[{owner}]"))
    return problems
