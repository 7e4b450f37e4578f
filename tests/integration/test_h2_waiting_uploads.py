"""HTTP/2 uploads held back by `http2.max_uploads`: the bytes they hold are credited back
to the connection window only up to one connection window per connection; a held-back
stream past that is refused (REFUSED_STREAM, never forwarded), and the upload under way
and the held-back streams within the bound still complete."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h2.events
import h2.exceptions
import pytest
from h2.errors import ErrorCodes
from test_http2 import RawH2, h2_config, https_port, root_ca, start

from conftest import Backend, Gateway

WINDOW = 256 * 1024  # http2.initial_window (default): one stream's window
CONNECTION_WINDOW = 4 * WINDOW


class Seen:
    """What the gateway told the client: connection credit and refused streams."""

    def __init__(self) -> None:
        self.credit = 0
        self.refused: set[int] = set()
        self.reset: set[int] = set()
        self.statuses: dict[int, str] = {}
        self.ended: set[int] = set()

    def note(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.WindowUpdated) and event.stream_id == 0:
            self.credit += event.delta or 0
        elif isinstance(event, h2.events.StreamReset):
            sid = event.stream_id or 0
            self.reset.add(sid)
            self.ended.add(sid)
            if event.error_code == ErrorCodes.REFUSED_STREAM:
                self.refused.add(sid)
        elif isinstance(event, h2.events.ResponseReceived):
            self.statuses[event.stream_id or 0] = dict(event.headers or [])[b":status"].decode()
        elif isinstance(event, h2.events.StreamEnded):
            self.ended.add(event.stream_id or 0)


def _barrier(client: RawH2, seen: Seen) -> None:
    """Everything sent so far has been handled by the gateway: its PING answer comes after
    the frames it wrote for them."""
    client.conn.ping(b"barrier!")
    client.flush()
    for event in client.events(timeout=10):
        seen.note(event)
        if isinstance(event, h2.events.PingAckReceived):
            return
    raise AssertionError("no PING answer")


def _send_what_fits(client: RawH2, left: dict[int, int], seen: Seen, end: bool) -> int:
    """Send the bytes `left` on each stream as far as the windows allow (the last with
    END_STREAM when `end`); returns how many were sent."""
    conn = client.conn
    sent = 0
    for sid, size in left.items():
        while size and sid not in seen.reset:
            chunk = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size, size)
            if chunk <= 0:
                break
            try:
                conn.send_data(sid, b"w" * chunk, end_stream=end and chunk == size)
            except h2.exceptions.StreamClosedError:
                break
            size -= chunk
            sent += chunk
        left[sid] = size
    client.flush()
    return sent


def _post(client: RawH2, path: str, length: int, flush: bool = True) -> int:
    sid = client.conn.get_next_available_stream_id()
    headers = [*client.request_headers(path, "POST"), ("content-length", str(length))]
    client.conn.send_headers(sid, headers)
    if flush:
        client.flush()
    return sid


# "with headers": each body's bytes leave in the same write as its HEADERS, so the
# gateway may read them before it knows the stream has to wait
@pytest.mark.parametrize("body", ["after headers", "with headers"])
def test_h2_uploads_held_back_are_bounded_by_one_connection_window(
    tmp_path: Path, backend: Backend, gateway: Callable[..., Gateway], body: str
) -> None:
    config = h2_config(tmp_path, backend, http2={"max_uploads": 1})
    start(gateway, config)
    client = RawH2(https_port(config), root_ca(tmp_path))
    seen = Seen()
    _barrier(client, seen)  # the gateway's SETTINGS and connection window are in
    running = _post(client, "/running", 2 * WINDOW)  # the one upload forwarded
    # Eight more uploads wait behind it; each sends its whole stream window (one byte
    # of its body short), one stream after the other.
    waiting = []
    accepted: dict[int, int] = {}
    for i in range(8):
        sid = _post(client, f"/waiting/{i}", WINDOW + 1, flush=body == "after headers")
        waiting.append(sid)
        left = {sid: WINDOW}
        while left[sid] and _send_what_fits(client, left, seen, end=False):
            _barrier(client, seen)
        _barrier(client, seen)
        if sid not in seen.refused:
            accepted[sid] = WINDOW - left[sid]
    # Held back in all: one connection window (four stream windows), credited back so
    # the upload under way keeps the connection window; the streams past it are
    # refused, never processed, so a client may retry them.
    held = waiting[:4]
    assert accepted == {sid: WINDOW for sid in held}
    assert seen.refused == set(waiting[4:])
    assert sum(accepted.values()) <= CONNECTION_WINDOW
    # The upload under way still completes, then the held-back ones, one at a time.
    left = {running: 2 * WINDOW} | {sid: 1 for sid in held}
    _send_what_fits(client, left, seen, end=True)
    for event in client.events(timeout=30):
        seen.note(event)
        if {running, *held} <= seen.ended:
            break
        _send_what_fits(client, left, seen, end=True)
    client.close()
    assert seen.statuses == {sid: "200" for sid in (running, *held)}
    got = {r["path"]: r["body_len"] for r in backend.requests}
    assert got == {"/running": 2 * WINDOW} | {f"/waiting/{i}": WINDOW + 1 for i in range(4)}
