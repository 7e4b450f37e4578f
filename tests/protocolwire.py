"""The client side of the protocol harness (tests/protocolkit.py): HTTP/1.1 requests as bytes
and responses parsed back, an HTTP/2 client made with the `h2` library, and what a connection
answered to a byte stream, in a form two runs can be compared in."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)

VOLATILE = frozenset(("date", "x-request-id"))
"""Response fields that differ between two runs of the same bytes."""


# ------------------------------------------------------------------------ responses
@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]  # names in lower case, in the order received
    body: bytes = b""
    reset: int | None = None  # HTTP/2: the RST_STREAM code when the stream was reset
    complete: bool = True

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_list(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def normalised(self) -> tuple[int, tuple[tuple[str, str], ...], bytes, int | None]:
        """What must be the same in two runs of the same bytes: the volatile fields
        dropped, the request id replaced where the body repeats it."""
        body = self.body
        headers = tuple((k, v) for k, v in self.headers if k not in VOLATILE)
        request_id = self.header("x-request-id")
        if request_id and request_id.encode() in body:
            body = body.replace(request_id.encode(), b"<request-id>")
            # the traceparent the gateway started: its parent id is the id's second half
            body = body.replace(b"-" + request_id[16:].encode() + b"-", b"-<parent-id>-")
            # request ids differ in length too (a counter): the length of the body as replaced
            length = str(len(body))
            headers = tuple((k, length if k == "content-length" else v) for k, v in headers)
        return self.status, headers, body, self.reset


def parse_h1_responses(
    data: bytes, methods: Sequence[str] = (), closed: bool = False
) -> list[Response]:
    """The complete HTTP/1.1 responses in `data` (interim 1xx answers skipped). `methods`
    names the request each answers (a HEAD response has no body); a response without
    framing runs to the end of `data` once `closed`."""
    responses: list[Response] = []
    pos = 0
    while True:
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            break
        lines = data[pos:end].decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/"):
            raise AssertionError(f"not a status line: {lines[0]!r}")
        status = int(rest[:3])
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        start = end + 4
        if 100 <= status < 200 and status != 101:
            pos = start
            continue
        response = Response(status, headers)
        method = methods[len(responses)] if len(responses) < len(methods) else "GET"
        te = (response.header("transfer-encoding") or "").lower()
        length = response.header("content-length")
        if method == "HEAD" or status in (204, 304) or status == 101:
            pos = start
        elif te == "chunked":
            body, pos = _dechunk(data, start)
            if pos < 0:
                break
            response.body = body
        elif length is not None:
            if len(data) < start + int(length):
                break
            response.body = data[start : start + int(length)]
            pos = start + int(length)
        elif closed:
            response.body = data[start:]
            pos = len(data)
        else:
            break
        responses.append(response)
    return responses


def _dechunk(data: bytes, pos: int) -> tuple[bytes, int]:
    """A chunked body from `pos`: (body, position after it), or (b"", -1) if incomplete."""
    body: list[bytes] = []
    while True:
        line_end = data.find(b"\r\n", pos)
        if line_end < 0:
            return b"", -1
        size = int(data[pos:line_end].split(b";")[0], 16)
        pos = line_end + 2
        if size == 0:
            trailer_end = data.find(b"\r\n", pos)
            while trailer_end > pos:  # trailer fields, then the empty line
                pos = trailer_end + 2
                trailer_end = data.find(b"\r\n", pos)
            if trailer_end < 0:
                return b"", -1
            return b"".join(body), trailer_end + 2
        if len(data) < pos + size + 2:
            return b"", -1
        body.append(data[pos : pos + size])
        pos += size + 2


def h1_request(
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes | None = None,
    host: str = "localhost",
    chunks: Sequence[bytes] | None = None,
) -> bytes:
    """The bytes of one HTTP/1.1 request: with `body`, a Content-Length; with `chunks`,
    a chunked body of those chunks."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if chunks is not None:
        lines.append("Transfer-Encoding: chunked")
        payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c) + b"0\r\n\r\n"
    elif body is not None:
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    else:
        payload = b""
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


class H2Client:
    """The client side of an HTTP/2 connection, made with the `h2` library: requests become
    bytes (`to_send`), the gateway's bytes become responses by stream id."""

    def __init__(self, validate: bool = True) -> None:
        config = H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=validate,
            normalize_outbound_headers=validate,
            validate_inbound_headers=False,
        )
        self.h2 = H2Connection(config)
        self.h2.initiate_connection()
        self.responses: dict[int, Response] = {}
        self.ended: set[int] = set()
        self.goaway: int | None = None  # the GOAWAY error code, once received
        self.outgoing = b""  # queued by `raw`

    def request(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
        authority: str = "localhost",
        data_frames: Sequence[bytes] | None = None,
    ) -> int:
        """Queue a request: `body` in one DATA frame with a content-length, or
        `data_frames` without one. Returns its stream id."""
        sid: int = self.h2.get_next_available_stream_id()
        fields = [(":method", method), (":scheme", "https"), (":authority", authority)]
        fields += [(":path", path), *headers]
        if body is not None:
            fields.append(("content-length", str(len(body))))
        frames = [body] if body is not None else list(data_frames or [])
        encoded = [(k.encode(), v.encode()) for k, v in fields]
        self.h2.send_headers(sid, encoded, end_stream=not frames)
        for i, frame in enumerate(frames):
            self.h2.send_data(sid, frame, end_stream=i == len(frames) - 1)
        return sid

    def raw(self, data: bytes) -> None:
        """Bytes no client library would send (a malformed frame), after what is queued."""
        self.outgoing += self.h2.data_to_send() + data

    def to_send(self) -> bytes:
        data = bytes(self.outgoing + self.h2.data_to_send())
        self.outgoing = b""
        return data

    def receive(self, data: bytes) -> None:
        if not data:
            return
        for event in self.h2.receive_data(data):
            if isinstance(event, ResponseReceived):
                headers = [
                    (bytes(k).decode("latin-1"), bytes(v).decode("latin-1"))
                    for k, v in event.headers or []
                ]
                status = int(dict(headers)[":status"])
                fields = [(k, v) for k, v in headers if not k.startswith(":")]
                self.responses[event.stream_id] = Response(status, fields, complete=False)
            elif isinstance(event, DataReceived):
                response = self.responses[event.stream_id]
                response.body += event.data
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                self.ended.add(event.stream_id)
                if event.stream_id in self.responses:
                    self.responses[event.stream_id].complete = True
            elif isinstance(event, StreamReset):
                self.ended.add(event.stream_id)
                response = self.responses.setdefault(event.stream_id, Response(0, []))
                response.reset = int(event.error_code or 0)
            elif isinstance(event, ConnectionTerminated):
                self.goaway = int(event.error_code or 0)

    def done(self, sid: int) -> bool:
        return sid in self.ended or self.goaway is not None


# ------------------------------------------------------------------------- outcomes
@dataclass
class Outcome:
    """What a connection answered to a whole byte stream."""

    responses: list[Response]
    closed: bool
    goaway: int | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]

    def normalised(self) -> tuple[object, ...]:
        return tuple(r.normalised() for r in self.responses), self.closed, self.goaway


def split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """`data` cut at the given offsets (any order, duplicates and out-of-range ignored)."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]
