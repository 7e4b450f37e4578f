"""Observability settings changed by a reload, in a running gateway: what the reload
promises (applied at once, or a line in the log saying it waits for a restart) holds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from test_alert_channels import Receiver, receivers  # noqa: F401 (a fixture)
from test_alert_running import config, wait_for

from conftest import Gateway, free_port


def test_alert_rules_added_by_a_reload_are_evaluated(
    tmp_path: Path,
    gateway: Callable[..., Gateway],
    receivers: Callable[..., Receiver],  # noqa: F811
) -> None:
    """A gateway started without alerts (and without the admin listener) evaluates the
    rules a reload adds: they fire, as they would after a restart."""
    hook = receivers()
    upstream = free_port()  # nothing listens: the pool has no healthy endpoint
    with_alerts = config(free_port(), upstream, hook, tmp_path / "data", 1)
    without = {key: value for key, value in with_alerts.items() if key != "alerts"}
    gw = gateway(without)
    gw.reload(with_alerts, wait_for="configuration reloaded")
    assert wait_for(hook, 1) == [("pool-down", "firing")]
    gw.stop()
    assert "Traceback" not in gw.stderr
