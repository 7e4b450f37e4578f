"""OpenAPI security schemes → bastion ``auth`` methods, and an operation's ``security``
requirement → what its route asks of a caller.

A route must never refuse a caller the document admits, nor let through one it refuses
when bastion can tell: so an alternative bastion cannot check (a cookie key, mutual TLS)
leaves the whole requirement to the app, and of schemes required together (AND) bastion
checks one and leaves the others to the app.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Access", "EnvRef", "Method", "SchemeBook", "Use"]


class EnvRef(str):
    """A ``${NAME}`` reference written as it is; every other value from the document has
    its ``${`` escaped, so that a document cannot make the config read the environment."""

    __slots__ = ()


PLACEHOLDER_JWKS = "https://issuer.invalid/.well-known/jwks.json"
"""A JWKS URL that can never resolve (RFC 2606 .invalid): until the user sets the real one,
the route fails closed (503) rather than open."""
_OIDC_SUFFIX = "/.well-known/openid-configuration"
# the names bastion's api_keys accepts (config/policy_auth.py)
_HEADER = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_QUERY = re.compile(r"[A-Za-z0-9_.~-]+")


@dataclass(frozen=True)
class Method:
    """One bastion auth method (``api_keys``, ``jwt`` or ``basic``) with its settings."""

    kind: str
    settings: tuple[tuple[str, Any], ...]
    anchor: str | None = None
    """YAML anchor of its settings block, written once at the top of the file."""
    notes: tuple[str, ...] = ()
    """Comment lines written above that block: what to fill in, what was guessed."""
    env: tuple[str, ...] = ()
    """Environment variables its settings reference."""
    scheme: str = ""


@dataclass(frozen=True)
class Use:
    method: Method
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Access:
    """What a route asks of a caller: nothing (``uses`` empty) or any one of ``uses``."""

    uses: tuple[Use, ...] = ()
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def public(self) -> bool:
        return not self.uses

    def label(self) -> str:
        if not self.uses:
            return "public"
        return " or ".join(u.method.scheme or u.method.kind for u in self.uses)


def _anchor(name: str) -> str:
    text = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")
    return f"auth-{text or 'scheme'}"


def _relative(url: Any) -> bool:
    return isinstance(url, str) and not urlsplit(url).scheme


class SchemeBook:
    """The document's security schemes, each turned into a Method once (the OIDC discovery
    fetch happens at most once per scheme)."""

    def __init__(
        self, schemes: Any, discover: Callable[[str], tuple[str, str] | None] | None = None
    ) -> None:
        self.schemes: dict[str, Any] = schemes if isinstance(schemes, dict) else {}
        self.discover = discover or (lambda url: None)
        self.made: dict[str, Method | str] = {}
        self.anchors: set[str] = set()

    def method(self, name: str) -> Method | str:
        """The Method for scheme `name`, or why bastion cannot check it."""
        if name not in self.made:
            self.made[name] = self._make(name)
        return self.made[name]

    def _make(self, name: str) -> Method | str:
        scheme = self.schemes.get(name)
        if not isinstance(scheme, dict):
            return f"security scheme {name!r} is not defined in components.securitySchemes"
        kind = str(scheme.get("type", "")).strip()
        anchor = _anchor(name)
        while anchor in self.anchors:  # "a b" and "a-b" would both be auth-a-b
            anchor += "-2"
        self.anchors.add(anchor)
        if kind == "apiKey":
            return self._api_key(name, scheme, anchor)
        if kind == "http":
            how = str(scheme.get("scheme", "")).lower()
            if how == "basic":
                return Method(
                    "basic",
                    (("users_file", "htpasswd"),),
                    anchor,
                    (
                        "HTTP Basic: users and bcrypt hashes in ./htpasswd (name:hash lines);",
                        "add one with: htpasswd -B htpasswd NAME",
                    ),
                    scheme=name,
                )
            if how == "bearer":
                fmt = str(scheme.get("bearerFormat", "JWT") or "JWT")
                if fmt.upper() != "JWT":
                    # an opaque bearer token: bastion's API keys, sent as a bearer token
                    return Method(
                        "api_keys",
                        (("header", None), ("bearer", True)),
                        anchor,
                        (f"bearer tokens ({fmt}): API keys made by `bastion keys create`",),
                        scheme=name,
                    )
                return self._jwt_stub(name, anchor, "HTTP bearer JWT")
            return f"HTTP {how or '?'} authentication ({name}) is not a method bastion checks"
        if kind == "oauth2":
            flows = scheme.get("flows")
            if not isinstance(flows, dict):
                flows = {}
            urls = [
                flow.get(key)
                for flow in flows.values()
                if isinstance(flow, dict)
                for key in ("tokenUrl", "authorizationUrl")
                if flow.get(key)
            ]
            if urls and all(_relative(u) for u in urls):
                return self._jwt_own(name, anchor)
            return self._jwt_stub(name, anchor, "OAuth2 access tokens (JWT)")
        if kind == "openIdConnect":
            return self._oidc(name, scheme, anchor)
        return f"{kind or 'untyped'} security ({name}) is not a method bastion checks"

    def _api_key(self, name: str, scheme: dict[str, Any], anchor: str) -> Method | str:
        key_name = str(scheme.get("name", "")).strip()
        where = scheme.get("in")
        notes = ("API keys made by `bastion keys create`; the app gets X-Consumer, not the key",)
        if not (_HEADER if where == "header" else _QUERY).fullmatch(key_name):
            return f"the API key name {key_name!r} ({name}) is not one bastion can read"
        if where == "header" and key_name:
            settings: tuple[tuple[str, Any], ...] = (("header", key_name), ("bearer", False))
            return Method("api_keys", settings, anchor, notes, scheme=name)
        if where == "query" and key_name:
            settings = (("header", None), ("bearer", False), ("query", key_name))
            return Method("api_keys", settings, anchor, notes, scheme=name)
        return f"an API key in a {where or '?'} ({name}) is not read by bastion's api_keys"

    def _jwt_own(self, name: str, anchor: str) -> Method:
        # a relative tokenUrl: the app hands out the tokens itself, typically signed with
        # HS256 and a secret of its own (FastAPI's OAuth2PasswordBearer tutorial)
        return Method(
            "jwt",
            (("algorithms", ("HS256",)), ("secret", EnvRef("${JWT_SECRET}"))),
            anchor,
            (
                "OAuth2 with the app's own token URL: tokens the app signs itself.",
                "export JWT_SECRET=<the key the app signs its tokens with> (32 bytes or more);",
                "or, for RS256/ES256 tokens: algorithms [RS256] and key_file: public.pem",
            ),
            ("JWT_SECRET",),
            name,
        )

    def _jwt_stub(self, name: str, anchor: str, what: str) -> Method:
        return Method(
            "jwt",
            (("algorithms", ("RS256",)), ("jwks_url", PLACEHOLDER_JWKS)),
            anchor,
            (
                f"{what}: TODO set jwks_url to your identity provider's JWKS (its",
                "/.well-known/openid-configuration names it jwks_uri) and issuer; until then",
                "these routes answer 503. Tokens the app signs itself: algorithms [HS256],",
                "secret: ${JWT_SECRET}.",
            ),
            scheme=name,
        )

    def _oidc(self, name: str, scheme: dict[str, Any], anchor: str) -> Method:
        url = str(scheme.get("openIdConnectUrl", "")).strip()
        if not url.startswith(("http://", "https://")):
            return self._jwt_stub(name, anchor, "OpenID Connect")
        found = self.discover(url)
        if found is not None:
            issuer, jwks = found
            notes: tuple[str, ...] = (f"OpenID Connect: issuer and JWKS from {url}",)
        else:
            issuer = url.removesuffix(_OIDC_SUFFIX) if url.endswith(_OIDC_SUFFIX) else url
            jwks = issuer.rstrip("/") + "/.well-known/jwks.json"
            notes = (
                f"OpenID Connect: {url} could not be fetched; issuer and jwks_url are",
                "guessed from it: TODO check them against the discovery document",
            )
        notes += ("add audience: <your API's identifier> to refuse tokens minted for others",)
        settings = (("algorithms", ("RS256",)), ("jwks_url", jwks), ("issuer", issuer))
        return Method("jwt", settings, anchor, notes, scheme=name)

    def access(self, requirements: Any) -> Access:
        """What a caller must show for an operation whose effective ``security`` is
        `requirements` (a list of alternatives, each mapping scheme names to scopes)."""
        if not isinstance(requirements, list) or not requirements:
            return Access()
        alternatives = [alt for alt in requirements if isinstance(alt, dict)]
        if any(not alt for alt in alternatives):
            return Access(notes=("the document also admits anonymous callers ({})",))
        uses: list[Use] = []
        notes: list[str] = []
        for alt in alternatives:
            picked: Use | None = None
            reasons: list[str] = []
            for name, scopes in alt.items():
                made = self.method(str(name))
                if isinstance(made, str):
                    reasons.append(made)
                elif picked is None:
                    # OpenAPI 3.1 lets other schemes list roles here: only JWTs carry scopes
                    wanted = scopes if made.kind == "jwt" and isinstance(scopes, list) else ()
                    picked = Use(made, tuple(str(s) for s in wanted))
                else:
                    notes.append(f"{name} is required too: the app checks it")
            if picked is None:
                # one way in bastion cannot check: requiring the others would lock out
                # callers the document admits, so the app decides alone
                return Access(notes=(*reasons, "so this route leaves authentication to the app"))
            uses.append(picked)
        return Access(_merge(uses, notes), tuple(notes))


def _merge(uses: list[Use], notes: list[str]) -> tuple[Use, ...]:
    """One Use per bastion method kind (a route has one api_keys and one jwt block)."""
    by_kind: dict[str, Use] = {}
    for use in uses:
        first = by_kind.get(use.method.kind)
        if first is None:
            by_kind[use.method.kind] = use
        elif first.method.kind == "api_keys" and first.method != use.method:
            by_kind["api_keys"] = Use(_merge_keys(first.method, use.method, notes))
        elif first.method != use.method or first.scopes != use.scopes:
            notes.append(
                f"{use.method.scheme} is an alternative bastion does not check on the same route"
            )
    if len(uses) > 1:
        # scopes of one alternative must not be asked of callers using another
        by_kind = {k: replace(u, scopes=()) for k, u in by_kind.items()}
    return tuple(by_kind[k] for k in ("api_keys", "jwt", "basic") if k in by_kind)


def _merge_keys(a: Method, b: Method, notes: list[str]) -> Method:
    """Two API key schemes as alternatives: one api_keys block reading both places."""
    sa, sb = dict(a.settings), dict(b.settings)
    header = sa.get("header") or sb.get("header")
    if sa.get("header") and sb.get("header") and sa["header"] != sb["header"]:
        notes.append(f"bastion reads one key header: {sb['header']} is not read")
    query = sa.get("query") or sb.get("query")
    settings: list[tuple[str, Any]] = [
        ("header", header),
        ("bearer", bool(sa.get("bearer") or sb.get("bearer"))),
    ]
    if query:
        settings.append(("query", query))
    return Method("api_keys", tuple(settings), None, scheme=f"{a.scheme} or {b.scheme}")
