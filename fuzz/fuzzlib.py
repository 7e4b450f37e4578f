"""The request registry and the oracles of the differential fuzzers: they compare what the
client sent, what the gateway answered and what the backend received (see processes.py for
the backend and the bastion process).

Every request the fuzzer sends carries an id (an `X-Fuzz-Id` field and, outside the cached
route, an `fz=` query parameter). The backend records every request head it gets and answers
200 with `X-Fuzz-Echo: <ids>` and a JSON body naming the request, so every answer and every
forwarded request can be tied to the client request it belongs to.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

from processes import Seen

ROUTES = ("public", "admin", "cached", "limited", "hdr")
# Fields only the gateway may set upstream; a client-sent spelling that a WSGI/CGI backend
# maps onto the same variable (underscores for hyphens) is a spoof.
GATEWAY_FIELDS = frozenset(
    (
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-real-ip",
        "x-request-id",
        "x-consumer",
        "x-upstream-token",
    )
)


def new_id(rng: Any) -> str:
    return f"{rng.getrandbits(48):012x}"


# ------------------------------------------------------------------ paths
def _dot_segments(segments: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for seg in segments:
        if seg == b"..":
            if len(out) > 1:
                out.pop()
        elif seg != b".":
            out.append(seg)
    if segments and segments[-1] in (b".", b".."):
        out.append(b"")
    return out


def _unescape(match: re.Match[bytes]) -> bytes:
    return bytes([int(match.group(1), 16)])


def backend_view(target: bytes, lenient: bool = False, merge: bool = False) -> bytes:
    """The path a backend serves for this request target.

    Strict: the fragment is dropped and dot segments (also percent-encoded ones, as
    WHATWG URL parsers do) are resolved — what Werkzeug, uvicorn and Node do.
    Lenient: also decodes every percent-escape (%2F), treats `\\` as `/`, drops `;params`
    and merges slashes — what some Java and PHP stacks do.
    Merge: repeated slashes are one, as in bastion's canonical form (merged before dot
    segments are resolved): a target the gateway forwards in that form is unchanged."""
    if target[:7].lower() == b"http://" or target[:8].lower() == b"https://":
        rest = target.split(b"//", 1)[1]
        slash = rest.find(b"/")
        target = rest[slash:] if slash >= 0 else b"/"
    path = target.split(b"#", 1)[0].split(b"?", 1)[0]
    if merge:
        path = re.sub(rb"/{2,}", b"/", path)
    if lenient:
        path = unquote_to_bytes(path).replace(b"\\", b"/")
        path = b"/".join(seg.split(b";", 1)[0] for seg in path.split(b"/"))
        path = re.sub(rb"/{2,}", b"/", path)
    # percent-escapes of unreserved characters mean the characters (RFC 3986 §6.2.2.2)
    path = re.sub(rb"%(2[dDeE]|3[0-9]|[46][1-9a-fA-F]|[57][0-9aA]|5[fF]|7[eE])", _unescape, path)
    segments = path.split(b"/")
    return b"/".join(_dot_segments(segments))


def route_of(path: bytes) -> str:
    for name in ROUTES:
        if path.startswith(b"/" + name.encode() + b"/"):
            return name
    return "other"


# ------------------------------------------------------------------ registry
@dataclass
class Sent:
    """One request the client sent as a whole (a request head it wrote)."""

    rid: str
    case: int
    method: bytes
    target: bytes
    body_len: int | None  # decoded length the client framed; None when ambiguous
    valid_key: bool  # the key is in the head exactly once (header, bearer or query)
    conflicting_keys: bool  # two differing credentials in the head
    host: bytes
    trailer_names: list[bytes] = field(default_factory=list)
    header_names: list[bytes] = field(default_factory=list)
    status: int | None = None
    echo: str | None = None
    route: str | None = None
    cache: str | None = None
    seen: int = 0


@dataclass
class Finding:
    kind: str
    case: int
    detail: str
    data: bytes
    note: str = ""  # a readable form of the bytes (HTTP/2: the fields of each stream)

    def show(self, seed: int) -> str:
        text = f"FINDING [{self.kind}] seed={seed} case={self.case}: {self.detail}\n"
        if self.note:
            text += f"  streams: {short(self.note.encode('latin-1', 'replace'))}\n"
        return text + f"  bytes: {short(self.data)}"


def short(data: bytes, limit: int = 1500) -> str:
    """repr of the bytes with long runs of one byte written as <N x b'a'>."""
    text = re.sub(
        rb"(.)\1{39,}",
        lambda m: b"<%d x %s>" % (len(m.group(0)), repr(m.group(1)).encode()),
        data,
        flags=re.S,
    )
    out = repr(text)
    return out if len(out) <= limit else out[:limit] + f"... ({len(data)} bytes)"


class Oracles:
    """The findings of one run, from the client's and the backend's records."""

    def __init__(self, seed: int, key: str) -> None:
        self.seed = seed
        self.key = key.encode()
        self.sent: dict[str, Sent] = {}
        self.case_bytes: dict[int, bytes] = {}
        self.case_notes: dict[int, str] = {}
        self.log_path: Path | None = None  # every finding as a JSON line
        self.findings: list[Finding] = []
        self.kinds: dict[str, int] = {}
        self.statuses: dict[str, int] = {}
        self.requests = 0
        self.smuggled_ids: dict[str, int] = {}  # ids only ever inside a body -> case
        self.smuggled_seen_by_client: set[str] = set()

    def add(self, kind: str, case: int, detail: str) -> None:
        data = self.case_bytes.get(case, b"")
        finding = Finding(kind, case, detail, data, self.case_notes.get(case, ""))
        if self.log_path is not None:
            with self.log_path.open("a") as f:
                doc = {"kind": kind, "case": case, "detail": detail, "note": finding.note}
                f.write(json.dumps({**doc, "bytes": data.decode("latin-1")}) + "\n")
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if self.kinds[kind] <= 5:  # the first few of each kind in full
            print(finding.show(self.seed), flush=True)
        self.findings.append(finding)

    def key_state(self, target: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[bool, bool]:
        creds = [v.strip() for n, v in headers if n.lower() == b"x-api-key"]
        for n, v in headers:
            if n.lower() == b"authorization" and v.strip()[:7].lower() == b"bearer ":
                creds.append(v.strip()[7:].strip())
        query = target.split(b"#", 1)[0].partition(b"?")[2]
        for pair in query.split(b"&"):
            name, _, value = pair.partition(b"=")
            if name == b"api_key":
                creds.append(unquote_to_bytes(value))
        valid = creds.count(self.key) >= 1
        conflicting = len(set(creds)) > 1
        return valid, conflicting

    def answer(self, rid: str, status: int, headers: dict[bytes, bytes]) -> None:
        sent = self.sent[rid]
        sent.status = status
        self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
        echo = headers.get(b"x-fuzz-echo")
        sent.echo = echo.decode("latin-1") if echo is not None else None
        route = headers.get(b"x-fuzz-route")
        sent.route = route.decode("latin-1") if route is not None else None
        cache = headers.get(b"x-cache")
        sent.cache = cache.decode("latin-1") if cache is not None else None
        if status >= 500 and status not in (501, 505):  # not implemented / bad version
            self.add("5xx", sent.case, f"request {rid} answered {status} by the gateway")
        if sent.echo is None or sent.echo == rid:
            return
        other = self.sent.get(sent.echo)
        if sent.cache in ("HIT", "STALE") and other is not None:
            if backend_view(other.target, merge=True) != backend_view(sent.target, merge=True):
                self.add(
                    "cache-poisoning",
                    sent.case,
                    f"{sent.target!r} got the cached answer of {other.target!r}",
                )
            elif other.host.lower() != sent.host.lower():
                self.add(
                    "cache-host",
                    sent.case,
                    f"Host {sent.host!r} got the cached answer built for Host {other.host!r}",
                )
            return
        self.add("desync-response", sent.case, f"request {rid} got the answer of {sent.echo}")

    def smuggled_answered(self, echo: bytes | None) -> bool:
        """An answer for an id that was only ever inside a body: the gateway read those
        bytes as a request of its own (the framing said so), which is no desync as long as
        the client got that answer."""
        rid = echo.decode("latin-1") if echo is not None else ""
        if rid in self.smuggled_ids:
            self.smuggled_seen_by_client.add(rid)
            return True
        return False

    def backend_saw(self, seen: Seen) -> None:
        raw = seen.raw_head[:2000]
        if not seen.ids:
            self.add("desync-unknown", -1, f"backend got a request without an id: {raw!r}")
            return
        for rid in seen.ids:
            if rid in self.smuggled_ids and rid not in self.smuggled_seen_by_client:
                self.add("desync-smuggled", self.smuggled_ids[rid], f"backend got {raw!r}")
                continue
            if rid not in self.sent and rid not in self.smuggled_ids:
                self.add("desync-unknown", -1, f"backend got an unknown id {rid}: {raw!r}")
        sent = self.sent.get(seen.ids[0])
        if sent is None:
            return
        sent.seen += 1
        case = sent.case
        if len(seen.ids) > 1:
            self.add("desync-merged", case, f"one backend request carries ids {seen.ids}: {raw!r}")
        if sent.seen > 1:
            self.add("duplicate-forward", case, f"request {sent.rid} reached the backend twice")
        if seen.error:
            self.add(
                "forwarded-malformed", case, f"backend could not parse ({seen.error}): {raw!r}"
            )
        # a cache fills a HEAD miss with a GET (nginx's proxy_cache_convert_head does too)
        head_fill = sent.method == b"HEAD" and seen.method == b"GET" and sent.route == "cached"
        if seen.method != sent.method and not head_fill:
            self.add(
                "method-changed",
                case,
                f"client sent method {sent.method!r}, backend got {seen.method!r}: {raw!r}",
            )
        if backend_view(seen.target, merge=True) != backend_view(sent.target, merge=True):
            self.add(
                "target-changed",
                case,
                f"client sent {sent.target!r}, backend got {seen.target!r}",
            )
        if sent.body_len is not None and seen.body_len != sent.body_len:
            self.add(
                "body-changed",
                case,
                f"client framed {sent.body_len} body bytes, backend got {seen.body_len}",
            )
        if sent.status is not None and sent.echo is None and sent.status >= 400:
            self.add(
                "refused-but-forwarded",
                case,
                f"gateway answered {sent.status} yet forwarded {raw!r}",
            )
        self._route_checks(sent, seen, raw)
        self._field_checks(sent, seen, raw)

    def _route_checks(self, sent: Sent, seen: Seen, raw: bytes) -> None:
        strict = route_of(backend_view(seen.target))
        lenient = route_of(backend_view(seen.target, lenient=True))
        if "admin" in (strict, lenient) and not sent.valid_key:
            how = "strict" if strict == "admin" else "lenient"
            self.add(
                "auth-bypass" if how == "strict" else "auth-bypass-lenient-backend",
                sent.case,
                f"backend serves /admin/ ({how} view of {seen.target!r}) "
                f"for a request without the key (routed {sent.route})",
            )
        if sent.route is not None and sent.route != strict:
            self.add(
                "route-mismatch",
                sent.case,
                f"routed {sent.route}, backend serves {backend_view(seen.target)!r}",
            )
        if sent.conflicting_keys and sent.route == "admin":
            self.add("conflicting-keys-accepted", sent.case, "two differing keys, forwarded")

    def _field_checks(self, sent: Sent, seen: Seen, raw: bytes) -> None:
        names = [n.lower() for n, _ in seen.headers]
        for name in names:
            if name.replace(b"_", b"-").decode("latin-1") in GATEWAY_FIELDS and b"_" in name:
                self.add("underscore-spoof", sent.case, f"backend got field {name!r}")
            if name in (n.lower() for n in sent.trailer_names) and name not in (
                n.lower() for n in sent.header_names
            ):
                self.add("trailer-hoisted", sent.case, f"trailer {name!r} became a header")
            if any(c < 0x21 or c > 0x7E or c in b'"(),/:;<=>?@[\\]{}' for c in name):
                self.add("bad-name-forwarded", sent.case, f"non-token field name {name!r}")
        for name, value in seen.headers:
            if any((c < 0x20 and c != 0x09) or c == 0x7F for c in value):
                self.add("ctl-forwarded", sent.case, f"CTL in {name!r}: {value!r}")
        for value in seen.values(b"upgrade"):
            if b"h2c" in value.lower():
                self.add("h2c-upgrade-forwarded", sent.case, f"Upgrade {value!r} forwarded")
        if seen.values(b"x-upstream-token") and sent.method != sent.method.upper():
            self.add(
                "secret-on-odd-method", sent.case, f"injected secret sent with {sent.method!r}"
            )
        if any(c < 0x21 or c > 0x7E for c in seen.target):
            self.add("target-bytes-forwarded", sent.case, f"CTL/space/8-bit in {seen.target!r}")

    def summary(self, seconds: float, connections: int) -> str:
        if self.log_path is not None:
            print(f"all findings: {self.log_path}")
        lines = [
            f"seed={self.seed} ran {seconds:.0f}s: {connections} connections, "
            f"{self.requests} requests ({self.requests / max(seconds, 1e-9):.0f}/s)",
            "answers by status: "
            + ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items())),
            f"findings: {len(self.findings)}",
        ]
        for kind, count in sorted(self.kinds.items(), key=lambda kv: -kv[1]):
            first = next(f for f in self.findings if f.kind == kind)
            lines.append(f"  {kind}: {count} (first: case {first.case})")
        return "\n".join(lines)
