"""bench/report.py's reading of `bench/instructions.py`'s output: `make bench` turns it into
the observability budget's check (instructions per request, everything on against off)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import report
import wrk

# the output of `instructions.py --together --rounds 2 bare observe` (a real run, shortened)
TWO_ROUNDS = """\
round 1 of 2 (16 connections)
bare                4813 requests     62.6 kIr/req  idle   360.4 kIr/s  net    62.2 kIr/req  other threads     0.0 kIr/s
observe             4401 requests     65.6 kIr/req  idle   820.6 kIr/s  net    64.0 kIr/req  other threads   577.6 kIr/s
round 2 of 2 (16 connections)
bare                4700 requests     62.9 kIr/req  idle   361.0 kIr/s  net    62.4 kIr/req  other threads     0.0 kIr/s
observe             4301 requests     66.0 kIr/req  idle   830.1 kIr/s  net    64.6 kIr/req  other threads   580.2 kIr/s

against bare:            per request          net
(medians of the rounds' differences; each round's variants measured in it)
bare               +0.0k  +0.0%    +0.0k  +0.0%   (net +0.0% to +0.0%)
observe            +3.0k  +4.8%    +2.0k  +3.2%   (net +2.9% to +3.5%)
"""  # noqa: E501


def test_the_net_figures_and_the_median_change_are_read() -> None:
    found = report.parse_instructions(TWO_ROUNDS)
    assert found is not None
    off, on, change = found
    assert (round(off), round(on)) == (62300, 64300)  # medians of the rounds' "net"
    assert abs(change - 0.032) < 1e-9  # the script's median of the rounds' changes


def test_output_without_the_comparison_is_no_figure() -> None:
    assert report.parse_instructions("") is None
    assert report.parse_instructions(TWO_ROUNDS.split("\nagainst bare")[0]) is None
    assert report.parse_instructions(TWO_ROUNDS.replace("observe ", "trace   ")) is None


def test_the_cpu_time_of_a_request_is_split_into_user_and_kernel_time() -> None:
    # 80,000 requests for which the target spent 2 s in user space and 1.2 s in the kernel
    run = wrk.WrkResult(rps=10_000.0, requests=80_000, proxy_cpu_pct=40.0, proxy_user_s=2.0,
                        proxy_system_s=1.2)  # fmt: skip
    data = run.to_dict()
    assert (round(data["user_us"], 6), round(data["system_us"], 6)) == (25.0, 15.0)
    entry = {"median": {**data, "error_count": 0, "errors": {}, "non_2xx": 0}, "runs": [data]}
    column = report.HEADERS.index("user+sys us/req")
    markdown = report.table("newconn", {"bastion": entry}, markdown=True).splitlines()
    assert markdown[-1].split(" | ")[column] == "25.0+15.0"
    # the text table: cells two spaces apart at least (headers hold single spaces)
    text = report.table("newconn", {"bastion": entry}, markdown=False).splitlines()
    headers, row = (re.split(r"\s{2,}", line.strip()) for line in (text[1], text[-1]))
    assert headers[column] == "user+sys us/req" and row[column] == "25.0+15.0"
    assert wrk.WrkResult().to_dict()["user_us"] == 0.0  # no requests: no figure, no error
