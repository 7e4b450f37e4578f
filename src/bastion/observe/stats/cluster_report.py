"""`bastion stats --cluster`: the summary of every instance's figures in Redis, for a
terminal (or as JSON), with a row per instance."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from bastion.observe.stats.merge import cluster_summary
from bastion.observe.stats.report import count, duration, percent, render

if TYPE_CHECKING:
    from bastion.config.models import Config

__all__ = ["run_cluster_stats"]


def run_cluster_stats(config: Config, window: str, as_json: bool, out: TextIO = sys.stdout) -> int:
    """Print the cluster's summary of `window`; the exit status."""
    from redis.exceptions import RedisError

    from bastion.state.redis_stats import RedisStats
    from bastion.state.redis_sync import connect_sync

    state = config.state
    if state.redis is None:
        print(
            "bastion stats --cluster reads the figures the instances share in Redis: this "
            "config has no state.redis (without it, `bastion stats` shows this instance)",
            file=sys.stderr,
        )
        return 1
    try:
        reader = RedisStats(connect_sync(state), state.key_prefix)
        summary = cluster_summary(reader, window, time.time())
    except ValueError as exc:
        print(f"bastion stats --cluster: {exc}", file=sys.stderr)
        return 1
    except (RedisError, OSError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        print(
            f"cannot read the cluster statistics from Redis: {reason}; is Redis up and "
            "state.redis right? (`bastion doctor` checks it)",
            file=sys.stderr,
        )
        return 1
    if as_json:
        json.dump(summary, out, indent=2)
        out.write("\n")
        return 0
    instances = summary["instances"]
    out.write(render(summary, f"Redis, {len(instances)} instance(s)"))
    out.write("\n" + instance_table(summary) + "\n")
    return 0


def instance_table(summary: dict[str, Any]) -> str:
    rows = summary["instances"]
    if not rows:
        return "instances: none has written figures in this window"
    lines = [f"{'instance':<32} {'requests':>9} {'req/s':>8} {'5xx':>7} {'p95':>8}  last seen"]
    for row in rows:
        seen = time.strftime("%H:%M:%S", time.gmtime(row["last_seen"]))
        flag = "  MISSING" if row["missing"] else ""
        lines.append(
            f"{row['instance'][:32]:<32} {count(row['requests']):>9} {row['rps']:>8.2f} "
            f"{percent(row['rate_5xx']):>7} {duration(row['p95']):>8}  {seen} UTC{flag}"
        )
    missing = summary["missing"]
    if missing:
        lines.append(
            f"missing (no figures for over two write intervals): {', '.join(missing)}; "
            "their recent figures are not in the totals"
        )
    return "\n".join(lines)
