"""The terminal form of `bastion stats`: what clients sent is shown, never obeyed."""

from __future__ import annotations

from pathlib import Path

from bastion.clock import ManualClock
from bastion.observe.stats import StatsStore, StatsWriter
from bastion.observe.stats.report import printable, render, sparkline
from statskit import figures, interval

T0 = 1_800_000_000


def test_escape_sequences_from_clients_do_not_reach_the_terminal(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    writer = StatsWriter(tmp_path, clock)
    try:
        writer.add(
            interval(
                T0,
                {"api": figures(3, status={502: 3})},
                paths={"/\x1b[2J\x1b]0;owned\x07": 3},
                referrers={"https://x/\x1b[31m": 3},
                errors=[
                    {
                        "time": T0 + 0.1,
                        "route": "api",
                        "method": "GET",
                        "path": "/\x1b[2J",
                        "status": 502,
                        "request_id": "r1",
                    }
                ],
            )
        )
        assert writer.flush()
    finally:
        writer.close()
    clock.advance(2)
    text = render(StatsStore(tmp_path, clock).summary("5m"), tmp_path / "stats.sqlite3")
    assert "\x1b" not in text and "\x07" not in text
    assert "/\\x1b[2J\\x1b]0;owned\\x07" in text
    assert "https://x/\\x1b[31m" in text


def test_printable_and_sparkline() -> None:
    assert printable("/api/v1/users") == "/api/v1/users"
    assert printable("a\tb\nc") == "a\\x09b\\x0ac"
    assert printable("/café/日本") == "/café/日本"
    assert sparkline([0, 5, 10]) == "▁▄█"
    assert sparkline([0, 0]) == "▁▁"
