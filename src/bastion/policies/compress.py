"""Response compression: gzip, brotli or zstd, chosen from Accept-Encoding, streamed.

The encoder is a body filter: every piece the handler writes is compressed and flushed at
once, so a streamed answer (long polling, NDJSON) reaches the client without waiting for
the encoder's window to fill. Decisions are cached per distinct header value: browsers send
a handful of Accept-Encoding and Content-Type strings, so the hot path is two dict hits.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import brotli
import zstandard

from bastion.policies.base import ResponseHead

if TYPE_CHECKING:
    from bastion.config.policy_body import Compress
    from bastion.http.request import Request
    from bastion.plan.context import BuildContext, RouteSpec

__all__ = [
    "CompressPolicy",
    "build_compress_policy",
    "choose_encoding",
    "parse_accept_encoding",
]

_CACHE_MAX = 256  # distinct header values remembered; cleared when full


class _Gzip:
    __slots__ = ("encoder",)

    def __init__(self, level: int) -> None:
        # wbits 31: the gzip container (16) around a 32 KiB deflate window (15)
        self.encoder = zlib.compressobj(level, zlib.DEFLATED, 31)

    def feed(self, data: bytes) -> bytes:
        return self.encoder.compress(data) + self.encoder.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self.encoder.flush(zlib.Z_FINISH)


class _Brotli:
    __slots__ = ("encoder",)

    def __init__(self, quality: int) -> None:
        self.encoder = brotli.Compressor(quality=quality)

    def feed(self, data: bytes) -> bytes:
        return self.encoder.process(data) + self.encoder.flush()

    def finish(self) -> bytes:
        return self.encoder.finish()


class _Zstd:
    __slots__ = ("encoder",)

    def __init__(self, compressor: zstandard.ZstdCompressor) -> None:
        self.encoder = compressor.compressobj()

    def feed(self, data: bytes) -> bytes:
        return self.encoder.compress(data) + self.encoder.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def finish(self) -> bytes:
        return self.encoder.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)


def parse_accept_encoding(value: str) -> dict[str, float]:
    """Coding name (lowercase) → q-value; malformed q-values count as 0 (not acceptable)."""
    accepted: dict[str, float] = {}
    for item in value.split(","):
        name, _, params = item.partition(";")
        name = name.strip().lower()
        if not name:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, raw = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(raw.strip())
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:
                    q = 0.0
        accepted[name] = q
    return accepted


def choose_encoding(value: str, offered: list[str]) -> str | None:
    """The coding to use for an Accept-Encoding value: the highest q-value the client
    gives among `offered`, ties going to the earlier in `offered`; None for identity."""
    accepted = parse_accept_encoding(value)
    if "x-gzip" in accepted and "gzip" not in accepted:
        accepted["gzip"] = accepted["x-gzip"]
    star = accepted.get("*", 0.0)
    best, best_q = None, 0.0
    for coding in offered:
        q = accepted.get(coding, star)
        if q > best_q:
            best, best_q = coding, q
    return best


class _TypeMatcher:
    """Whether a Content-Type value is one of the configured compressible types."""

    def __init__(self, types: list[str]) -> None:
        self.exact = {t for t in types if "*" not in t}
        self.majors = {t[:-2] for t in types if t.endswith("/*")}
        # "application/*+json" → ("application", "+json")
        self.suffixes = {
            (t.partition("/")[0], t.partition("/")[2][1:]) for t in types if "/*+" in t
        }
        self.cache: dict[bytes, bool] = {}

    def __call__(self, content_type: bytes) -> bool:
        found = self.cache.get(content_type)
        if found is None:
            found = self._match(content_type.decode("latin-1"))
            if len(self.cache) >= _CACHE_MAX:
                self.cache.clear()
            self.cache[content_type] = found
        return found

    def _match(self, value: str) -> bool:
        kind = value.partition(";")[0].strip().lower()
        major, _, minor = kind.partition("/")
        if not minor or kind == "text/event-stream":
            return False
        if kind in self.exact or major in self.majors:
            return True
        return any(major == m and minor.endswith(s) for m, s in self.suffixes)


class CompressPolicy:
    """Response phase: compress eligible answers; runs after every other response policy."""

    def __init__(self, settings: Compress) -> None:
        self.offered: list[str] = list(settings.algorithms)
        self.min_size = settings.min_size
        self.is_compressible = _TypeMatcher(settings.types)
        zstd = zstandard.ZstdCompressor(level=settings.zstd_level)
        gzip_level, br_quality = settings.gzip_level, settings.br_quality
        self.makers: dict[str, Callable[[], object]] = {
            "gzip": lambda: _Gzip(gzip_level),
            "br": lambda: _Brotli(br_quality),
            "zstd": lambda: _Zstd(zstd),
        }
        self.choices: dict[bytes, str | None] = {}

    def choose(self, accept: bytes) -> str | None:
        found = self.choices.get(accept, False)
        if found is False:
            found = choose_encoding(accept.decode("latin-1"), self.offered)
            if len(self.choices) >= _CACHE_MAX:
                self.choices.clear()
            self.choices[accept] = found
        return found  # type: ignore[return-value]

    def _not_modified(self, req: Request, head: ResponseHead) -> None:
        """A 304 carries the validators the full answer would have: when that answer would
        be encoded for this client, its ETag is the weak one too."""
        if head.get(b"etag") is None or req.method == "HEAD":
            return
        accept = req.header(b"accept-encoding")
        if accept and self.choose(accept) is not None:
            _weaken(head)

    def on_response(self, req: Request, head: ResponseHead) -> None:
        status = head.status
        if status == 304:
            self._not_modified(req, head)
            return
        if status < 200 or status in (204, 206) or not head.can_transform:
            return  # (a body fixed in advance, such as a problem answer, is never encoded)
        content_type = head.get(b"content-type")
        if content_type is None or not self.is_compressible(content_type):
            return
        length = head.get(b"content-length")
        if length is not None:
            try:
                if int(length) < self.min_size or length == b"0":
                    return
            except ValueError:
                return
        # the answer depends on Accept-Encoding from here on, whatever this client sent
        _add_vary(head)
        if head.get(b"content-encoding") is not None or head.get(b"content-range") is not None:
            return  # never twice; a range of an encoded whole would be wrong
        cache_control = head.get(b"cache-control")
        if cache_control is not None and b"no-transform" in cache_control.lower():
            return
        if req.method == "HEAD":
            return
        accept = req.header(b"accept-encoding")
        if not accept:
            return
        coding = self.choose(accept)
        if coding is None:
            return
        head.set(b"Content-Encoding", coding.encode())
        _weaken(head)
        head.set_body_filter(self.makers[coding]())  # type: ignore[arg-type]


def _weaken(head: ResponseHead) -> None:
    etag = head.get(b"etag")
    if etag is not None and not etag.startswith(b"W/"):
        # the encoded bytes differ from the original: a strong validator would lie
        head.set(b"ETag", b"W/" + etag)


def _add_vary(head: ResponseHead) -> None:
    values = [value for name, value in head.fields if name.lower() == b"vary"]
    if not values:
        head.add(b"Vary", b"Accept-Encoding")
        return
    tokens = {t.strip().lower() for value in values for t in value.split(b",")}
    if b"accept-encoding" not in tokens and b"*" not in tokens:
        head.add(b"Vary", b"Accept-Encoding")


def build_compress_policy(spec: RouteSpec, ctx: BuildContext) -> CompressPolicy | None:
    """The route's compression (its own setting, else the site's), or None."""
    route, site = spec.route, spec.site
    settings = route.compress if route.compress is not None else site.compress
    return CompressPolicy(settings) if settings is not None and settings.enabled else None
