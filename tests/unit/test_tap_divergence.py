"""Two inputs on which the two request taps (`tap.RequestTap`, `rows.RowTap`) disagreed,
found by a review of the equivalence test's kind (test_tap_equivalence.py):

- Requests reach the finish hook in the order they finish, but their time is
  `req.ended`, which the proxy reads at the upstream's end (`proxy/exchange.py`), before
  the answer's last write: a request can be recorded after one that ended a little later.
  `RequestTap` rolls over at the first request past the boundary; `RowTap` bisected its
  column of end times as if it were sorted (it now cuts at the first row past it).
- `RequestTap` counted the top-K dimensions only while `top` was set when a request was
  recorded; `RowTap` keeps the values and counts them if `top` is set when taken (both
  now decide when taken).
"""

from __future__ import annotations

from typing import Any

from bastion.clock import ManualClock
from bastion.http.request import Request
from bastion.observe.interval import Interval
from bastion.observe.recorder import Recorder
from bastion.observe.rows import RowTap
from bastion.observe.tap import RequestTap


def finished(end: float, status: int = 200, path: str = "/a") -> Request:
    req = Request()
    req.route_name = "/api/"
    req.method = "GET"
    req.status = status
    req.raw_path = path
    req.client_ip = "192.0.2.1"
    req.start = end - 0.01
    req.ended = end
    return req


def seconds(tap: Any, ends: list[tuple[float, int]]) -> list[tuple[int, dict[int, int]]]:
    """(second, status codes) of each second the recorder closes, then the open one."""
    clock = ManualClock(1_800_000_000.5)  # the loop's 1000.5 is the wall clock's :01
    recorder = Recorder(tap, clock)
    seen: list[Interval] = []
    recorder.add_sink(seen.append)
    for end, status in ends:
        tap.record(finished(end, status))
    clock.advance(1.0)
    recorder.flush()
    return [
        (i.start, dict(i.routes["/api/"].codes) if i.routes else {})
        for i in [*seen, recorder.current]
    ]


def test_a_request_recorded_after_one_that_ended_later_lands_alike_in_both_taps() -> None:
    # 201 ended at :01.0001 and was recorded first; 202 ended at :00.9999, recorded next
    ends = [(1000.5001, 201), (1000.4999, 202), (1000.6, 203)]
    assert seconds(RequestTap(), ends) == seconds(RowTap(), ends)


def test_both_taps_count_the_top_dimensions_of_a_second_a_reader_joins_alike() -> None:
    got = []
    for tap in (RequestTap(), RowTap()):
        clock = ManualClock(1_800_000_000.1)
        recorder = Recorder(tap, clock)
        tap.record(finished(1000.2))  # before any sink reads the top-K dimensions
        seen: list[Interval] = []
        recorder.add_sink(seen.append)  # (a reload that turns statistics on)
        tap.record(finished(1000.3))
        clock.advance(1.0)
        recorder.flush()
        got.append(dict(seen[0].top["paths"]))
    assert got[0] == got[1]
