"""CORS: preflights answered at the gateway, CORS fields on the route's answers.

Request phase: an ``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method`` is a
preflight. From an allowed origin, asking for an allowed method and headers, it gets a 204
with the ``Access-Control-Allow-*`` fields; otherwise a 403 problem (a browser would refuse
the real request anyway, and the operator sees why). Either way the backend never sees it.

Response phase: the gateway owns CORS on the route, so the backend's own
``Access-Control-*`` fields are dropped; an allowed origin gets ``Access-Control-Allow-Origin``
(and credentials / exposed headers), and ``Vary: Origin`` is added whenever the answer
depends on the origin. A request from an origin not allowed is still forwarded (CORS is
enforced by browsers; what a script may read is what the fields say).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.http.request import Request
from bastion.policies.base import Answer, Denied, ResponseHead

if TYPE_CHECKING:
    from bastion.config.policy_traffic import Cors
    from bastion.plan.context import BuildContext, RouteSpec

__all__ = ["CorsPolicy"]

_CACHE_MAX = 4096
# Request fields a browser never lists in Access-Control-Request-Headers needing approval.
_SAFELISTED = frozenset({b"accept", b"accept-language", b"content-language", b"content-type"})
_ALWAYS_METHODS = frozenset({"GET", "HEAD", "POST"})
_PREFLIGHT_VARY = b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"


class CorsPolicy:
    kind = "cors"  # the config key it comes from: what metrics and logs call it
    is_async = False

    def __init__(self, cors: Cors, route_methods: list[str] | None = None) -> None:
        self.any_origin = cors.origins == ["*"]
        self.exact = frozenset(o.encode() for o in cors.origins if "*" not in o)
        # wildcard subdomains: (b"https://", b".example.com", b":8443" or b"")
        self.wildcards: list[tuple[bytes, bytes, bytes]] = []
        for origin in cors.origins:
            if "://*." in origin:
                scheme, _, rest = origin.partition("://*")
                host, port = _split_port(rest.encode())
                self.wildcards.append((scheme.encode() + b"://", host, port))
        self.credentials = cors.credentials
        self.methods = frozenset(cors.methods)
        self.any_header = cors.headers == ["*"]
        self.headers = frozenset(h.lower().encode() for h in cors.headers)
        self.allow_methods = ", ".join(cors.methods).encode()
        self.max_age = str(int(cors.max_age)).encode()
        self.expose = ", ".join(cors.expose_headers).encode()
        # an answer that is the same for every origin needs no Vary
        self.star = self.any_origin and not self.credentials
        self.cache: dict[bytes, bool] = {}
        # a route limited to some methods lets OPTIONS in for preflights only (plan/compile.py)
        self.not_options: Denied | None = None
        if route_methods is not None and "OPTIONS" not in route_methods:
            allowed = list(dict.fromkeys([*route_methods, "OPTIONS"]))
            if "GET" in allowed and "HEAD" not in allowed:
                allowed.insert(allowed.index("GET") + 1, "HEAD")
            self.not_options = Denied(405, None, b"Allow: " + ", ".join(allowed).encode() + b"\r\n")
        self.refused_origin = Denied(
            403,
            "This origin is not allowed to call this route.",
            b"Vary: " + _PREFLIGHT_VARY + b"\r\n",
        )

    # ------------------------------------------------------------- matching
    def origin_allowed(self, origin: bytes) -> bool:
        if self.any_origin:
            return True
        verdict = self.cache.get(origin)
        if verdict is None:
            verdict = self._match(origin.lower())
            if len(self.cache) >= _CACHE_MAX:
                self.cache.clear()
            self.cache[origin] = verdict
        return verdict

    def _match(self, origin: bytes) -> bool:
        if origin in self.exact:
            return True
        for scheme, suffix, port in self.wildcards:
            if not origin.startswith(scheme):
                continue
            host, origin_port = _split_port(origin[len(scheme) :])
            if origin_port == port and host.endswith(suffix) and len(host) > len(suffix):
                label = host[: -len(suffix)]
                if label and not label.startswith(b".") and b"/" not in label:
                    return True
        return False

    # ---------------------------------------------------------- request phase
    def on_request(self, req: Request) -> Answer | Denied | None:
        if req.method != "OPTIONS":
            return None
        origin = req.header(b"origin")
        method = req.header(b"access-control-request-method")
        if origin is None or method is None:
            return self.not_options  # a plain OPTIONS request: the route answers it, if allowed
        if not self.origin_allowed(origin):
            return self.refused_origin
        wanted = method.strip().decode("latin-1")
        if wanted not in self.methods and wanted not in _ALWAYS_METHODS:
            return Denied(
                403,
                "This method is not allowed for cross-origin requests on this route.",
                b"Vary: " + _PREFLIGHT_VARY + b"\r\n",
            )
        asked = req.header(b"access-control-request-headers") or b""
        names = [n.strip().lower() for n in asked.split(b",") if n.strip()]
        if not self.any_header:
            for name in names:
                if name not in self.headers and name not in _SAFELISTED:
                    return Denied(
                        403,
                        "A requested header field is not allowed for cross-origin requests "
                        "on this route.",
                        b"Vary: " + _PREFLIGHT_VARY + b"\r\n",
                    )
        lines = [
            b"Access-Control-Allow-Origin: ",
            b"*" if self.star else origin,
            b"\r\nAccess-Control-Allow-Methods: ",
            self.allow_methods,
            b"\r\nAccess-Control-Max-Age: ",
            self.max_age,
            b"\r\nVary: ",
            _PREFLIGHT_VARY,
            b"\r\n",
        ]
        if names:
            lines += [b"Access-Control-Allow-Headers: ", b", ".join(names), b"\r\n"]
        if self.credentials:
            lines.append(b"Access-Control-Allow-Credentials: true\r\n")
        return Answer(204, b"".join(lines))

    # --------------------------------------------------------- response phase
    def on_response(self, req: Request, head: ResponseHead) -> None:
        for name in head.names():
            if name.startswith(b"access-control-"):
                head.remove(name)
        origin = req.header(b"origin")
        if not self.star:
            _add_vary(head, b"Origin")
        if origin is None or not self.origin_allowed(origin):
            return
        if req.method == "OPTIONS" and req.header(b"access-control-request-method") is not None:
            # the preflight answer made by on_request: put its fields back
            return self._preflight_fields(req, head, origin)
        head.set(b"Access-Control-Allow-Origin", b"*" if self.star else origin)
        if self.credentials:
            head.set(b"Access-Control-Allow-Credentials", b"true")
        if self.expose:
            head.set(b"Access-Control-Expose-Headers", self.expose)

    def _preflight_fields(self, req: Request, head: ResponseHead, origin: bytes) -> None:
        if head.status != 204:
            return
        head.set(b"Access-Control-Allow-Origin", b"*" if self.star else origin)
        head.set(b"Access-Control-Allow-Methods", self.allow_methods)
        head.set(b"Access-Control-Max-Age", self.max_age)
        asked = req.header(b"access-control-request-headers")
        if asked:
            names = [n.strip().lower() for n in asked.split(b",") if n.strip()]
            head.set(b"Access-Control-Allow-Headers", b", ".join(names))
        if self.credentials:
            head.set(b"Access-Control-Allow-Credentials", b"true")


def _split_port(hostport: bytes) -> tuple[bytes, bytes]:
    """(host, b":port" or b"")."""
    if hostport.startswith(b"["):
        end = hostport.find(b"]")
        return hostport[: end + 1], hostport[end + 1 :]
    host, colon, port = hostport.rpartition(b":")
    if colon and port.isdigit():
        return host, b":" + port
    return hostport, b""


def _add_vary(head: ResponseHead, token: bytes) -> None:
    current = head.get(b"vary")
    if current is None:
        head.add(b"Vary", token)
        return
    tokens = [t.strip().lower() for t in current.split(b",")]
    if token.lower() not in tokens and b"*" not in tokens:
        head.set(b"Vary", current + b", " + token)


def build_cors(spec: RouteSpec, ctx: BuildContext) -> CorsPolicy | None:
    """The route's CORS (its own, else the site's), or None."""
    cors = spec.route.cors or spec.site.cors
    return None if cors is None else CorsPolicy(cors, spec.route.methods)
