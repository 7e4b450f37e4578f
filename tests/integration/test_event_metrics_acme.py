"""`bastion_acme_orders_total` and the certificate expiry gauge against a real Pebble: an
order that succeeds, and one whose challenge cannot validate."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from test_metrics import Samples, until

from conftest import Backend, Gateway, free_port, wait_for_port
from pebble_support import (  # noqa: F401 (pebble_fixture is a fixture)
    NAMES,
    Pebble,
    acme_config,
    pebble_fixture,
    wait_for_log,
)


def orders(got: Samples, result: str) -> float:
    return got.get(("bastion_acme_orders_total", (("result", result),)), 0.0)


def test_an_issued_order_and_its_certificate(
    tmp_path: Path,
    backend: Backend,
    pebble: Callable[[int], Pebble],
    gateway: Callable[..., Gateway],
) -> None:
    http, https, metrics = free_port(), free_port(), free_port()
    ca = pebble(http)
    config = acme_config(tmp_path, backend, ca, http, https)
    config["metrics"] = {"listen": f"127.0.0.1:{metrics}"}
    gw = gateway(config)
    wait_for_log(gw, "acme: serving the certificate for bastion.test, www.bastion.test")
    wait_for_port(metrics)
    got = until(metrics, lambda got: orders(got, "issued") == 1)
    assert orders(got, "issued") == 1 and orders(got, "failed") == 0
    for name in NAMES:
        assert got[("bastion_certificate_expiry_timestamp_seconds", (("name", name),))] > 0


def test_a_failed_order(
    tmp_path: Path,
    backend: Backend,
    pebble: Callable[[int], Pebble],
    gateway: Callable[..., Gateway],
) -> None:
    http, https, metrics = free_port(), free_port(), free_port()
    ca = pebble(free_port())  # Pebble validates on a port where nothing listens
    config = acme_config(tmp_path, backend, ca, http, https)
    config["metrics"] = {"listen": f"127.0.0.1:{metrics}"}
    gw = gateway(config)
    wait_for_log(gw, "acme: could not get a certificate for bastion.test, www.bastion.test")
    wait_for_port(metrics)
    got = until(metrics, lambda got: orders(got, "failed") >= 1)
    assert orders(got, "failed") >= 1 and orders(got, "issued") == 0
    # no certificate yet: no expiry for these names
    assert not any(
        name == "bastion_certificate_expiry_timestamp_seconds" and dict(labels).get("name") in NAMES
        for name, labels in got
    )
