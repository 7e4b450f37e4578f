"""`bastion stats`: the summary of a window for a terminal (or as JSON), read from the
statistics file while the gateway runs or after it stopped."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from bastion.observe.stats.schema import stats_path
from bastion.observe.stats.store import StatsStore

__all__ = ["render", "run_stats"]

SPARKS = "▁▂▃▄▅▆▇█"
TOP_LINES = 5  # rows of each top table in the terminal
TOP_TITLES = {
    "paths": "paths",
    "not_found": "404 paths",
    "clients": "clients",
    "consumers": "consumers",
    "browsers": "browsers",
    "os": "operating systems",
    "devices": "devices",
    "bots": "bots",
    "referrers": "referrers",
    "countries": "countries",
}


def run_stats(data_dir: Path, window: str, as_json: bool, out: TextIO = sys.stdout) -> int:
    """Print the summary of `window` from `data_dir`; the exit status."""
    path = stats_path(data_dir)
    try:
        summary = StatsStore(data_dir).summary(window)
    except sqlite3.Error as exc:
        print(f"cannot read the statistics in {path}: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(f"statistics from {path}", file=sys.stderr)
        json.dump(summary, out, indent=2)
        out.write("\n")
        return 0
    if not path.exists():
        print(
            f"no statistics in {data_dir} yet (no {path.name}): has bastion served traffic "
            "with this data dir and stats enabled?",
            file=out,
        )
        return 1
    out.write(render(summary, path))
    return 0


def printable(text: str) -> str:
    """`text` safe for a terminal: paths, referrers and User-Agent names come from clients,
    and an escape sequence in one must not drive the reader's terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def count(n: float) -> str:
    return f"{int(n):,}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    return f"{seconds:.3g} s"


def size(n: float) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.1f}%"


def sparkline(values: list[int]) -> str:
    top = max(values, default=0)
    if top <= 0:
        return SPARKS[0] * len(values)
    return "".join(SPARKS[min(len(SPARKS) - 1, v * len(SPARKS) // (top + 1))] for v in values)


def _stamp(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


def render(summary: dict[str, Any], path: Path | str) -> str:
    """The summary as text for a terminal (`path`: where the figures come from)."""
    totals = summary["totals"]
    lines = [
        f"bastion stats: last {summary['window']} "
        f"({_stamp(summary['since'])} to {_stamp(summary['until'])} UTC), from {path}",
        "",
    ]
    status = "  ".join(f"{name} {count(n)}" for name, n in totals["status"].items() if n)
    latency = totals["latency"]
    upstream = totals["upstream_latency"]
    cache = totals["cache"]
    refusals = totals["refusals"]
    tiles = [
        ("requests", f"{count(totals['requests'])} ({totals['rps']:.2f}/s)   {status}"),
        ("errors", f"4xx {percent(totals['rate_4xx'])}   5xx {percent(totals['rate_5xx'])}"),
        (
            "latency",
            f"p50 {duration(latency['p50'])}   p95 {duration(latency['p95'])}   "
            f"p99 {duration(latency['p99'])}",
        ),
        (
            "upstream",
            f"p50 {duration(upstream['p50'])}   p95 {duration(upstream['p95'])}   "
            f"p99 {duration(upstream['p99'])}   "
            f"({percent(totals['upstream_share'])} of the time)",
        ),
        (
            "cache",
            f"{count(cache['hits'])} hits of {count(cache['lookups'])} lookups "
            f"({percent(cache['ratio'])})",
        ),
        ("bytes", f"in {size(totals['bytes_in'])}   out {size(totals['bytes_out'])}"),
        ("refused", "   ".join(f"{code}: {count(n)}" for code, n in refusals.items())),
    ]
    lines += [f"  {name:<10}{text}" for name, text in tiles]
    series = summary["series"]
    if series["t"]:
        lines += ["", f"  requests per {summary['step']} s: {sparkline(series['requests'])}"]
    lines += ["", _table("routes", ["requests", "5xx", "p95"], _route_rows(summary["routes"]))]
    for dim, title in TOP_TITLES.items():
        rows = summary["top"].get(dim) or []
        if not rows:
            continue
        if dim == "consumers":
            table = [[printable(r["key"]), count(r["requests"]), count(r["limited"])] for r in rows]
            lines += ["", _table(title, ["requests", "429"], table[:TOP_LINES])]
        else:
            table = [[printable(r["key"]) or "(none)", count(r["requests"])] for r in rows]
            lines += ["", _table(title, ["requests"], table[:TOP_LINES])]
    if summary.get("scope") == "cluster":
        return "\n".join(lines) + "\n"  # the recent 5xx answers are per instance
    errors = summary["recent_errors"]
    lines += ["", "recent 5xx answers" if errors else "recent 5xx answers: none"]
    for error in errors[:10]:
        lines.append(
            printable(
                f"  {_stamp(error['time'])}  {error['status']}  {error['route']}  "
                f"{error['method']} {error['path']}  id {error['request_id']}"
                + (f"  upstream {error['upstream']}" if error.get("upstream") else "")
            )
        )
    return "\n".join(lines) + "\n"


def _route_rows(routes: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [r["route"], count(r["requests"]), percent(r["error_rate"]), duration(r["p95"])]
        for r in routes
    ]


def _table(title: str, headings: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return f"{title}: none"
    width = min(max(len(title), *(2 + len(row[0]) for row in rows)), 62)
    cells = [[heading, *(row[i + 1] for row in rows)] for i, heading in enumerate(headings)]
    widths = [max(len(cell) for cell in column) for column in cells]
    out = [
        f"{title:<{width}}  " + "  ".join(h.rjust(w) for h, w in zip(headings, widths, strict=True))
    ]
    for row in rows:
        key = row[0] if len(row[0]) <= width - 2 else row[0][: width - 3] + "…"
        values = "  ".join(value.rjust(w) for value, w in zip(row[1:], widths, strict=True))
        out.append(f"  {key:<{width - 2}}  {values}")
    return "\n".join(out)
