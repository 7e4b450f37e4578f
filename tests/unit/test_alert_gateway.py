"""What ties alerts to a running gateway: one evaluating worker (a file lock), its states
read by the other workers, and the gateway's inputs (balancers, certificates, reloads)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.balance.endpoint import endpoint_of
from bastion.clock import ManualClock
from bastion.config import config_from_dict
from bastion.observe.alerts import AlertLock, AlertManager, PoolHealth
from bastion.observe.alerts.gateway import (
    GatewayInputs,
    certificates_of,
    read_reload_result,
    write_reload_result,
)
from bastion.observe.alerts.leader import shared_status
from bastion.plan import compile_plan
from bastion.proxy.pool import PoolRegistry
from bastion.state.snapshots import MemorySnapshots
from tlsbackend import TestCA

START = 1_800_000_000.0


def test_one_lock_holder_at_a_time(tmp_path: Path) -> None:
    first, second = AlertLock.in_data_dir(tmp_path), AlertLock.in_data_dir(tmp_path)
    assert first.acquire() and first.held
    assert not second.acquire() and not second.held  # flock: per open file, even in one process
    assert first.acquire()  # the holder keeps it
    first.release()
    assert second.acquire() and not first.acquire()
    second.release()


def test_a_worker_that_does_not_evaluate_shows_the_evaluating_ones_states(
    tmp_path: Path,
) -> None:
    settings = config_from_dict(
        {
            "sites": [{"routes": [{"path": "/", "respond": {"status": 200}}]}],
            "alerts": {"rules": {"quiet": {"kind": "no_traffic"}}},
        }
    ).config.alerts
    board: dict[str, dict[str, str]] = {}
    clock = ManualClock(START + 2)

    class NoTraffic(GatewayInputs):
        def period(self, since: float, until: float, route: str | None = None) -> dict:
            return {"requests": 0}

    managers = []
    for worker in ("1", "2"):
        publish, read = shared_status(MemorySnapshots(worker, board))
        managers.append(
            AlertManager(
                settings,
                NoTraffic(clock=clock),
                clock,
                lock=AlertLock.in_data_dir(tmp_path),
                publish=publish,
                leader_status=read,
            )
        )
    leader, other = managers

    async def main() -> None:
        tasks = [asyncio.create_task(m.run()) for m in managers]
        await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    assert leader.lock is not None and other.lock is not None
    assert leader.lock.acquire()  # the first worker wins the lock
    asyncio.run(main())
    [state] = leader.status()
    assert state["state"] == "FIRING"
    assert other.status() == [state]  # read from the leader's snapshot
    assert other.states["quiet"].state == "INSUFFICIENT_DATA"  # it evaluated nothing


@pytest.fixture
def registry() -> Iterator[PoolRegistry]:
    loop = asyncio.new_event_loop()
    try:
        yield PoolRegistry(loop)
    finally:
        loop.close()


def test_pools_come_from_the_balancers(tmp_path: Path, registry: PoolRegistry) -> None:
    config = config_from_dict(
        {
            "data_dir": str(tmp_path),
            "sites": [
                {
                    "routes": [
                        {
                            "path": "/",
                            "proxy": {"upstreams": ["http://127.0.0.1:9", "http://127.0.0.1:10"]},
                        }
                    ]
                }
            ],
        }
    ).config
    plan = compile_plan(config, registry)
    inputs = GatewayInputs(balancers=lambda: plan.balancers, loop_time=lambda: 100.0)
    [balancer] = plan.balancers
    assert inputs.pools() == {balancer.name: PoolHealth(2, 2)}
    for member in balancer.members:
        endpoint_of(member.ep.pool).set_healthy(False, 100.0)
    assert inputs.pools() == {balancer.name: PoolHealth(0, 2)}


def test_certificates_and_reloads(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    cert, key = ca.issue("site", ["a.example.test"])
    config = config_from_dict(
        {
            "data_dir": str(tmp_path),
            "listen": {"http": [], "https": "127.0.0.1:8443"},
            "sites": [
                {
                    "hosts": ["a.example.test"],
                    "tls": {"cert": str(cert), "key": str(key)},
                    "routes": [{"path": "/", "respond": {"status": 200}}],
                }
            ],
        }
    ).config
    [found] = certificates_of(config)
    assert found.names == ("a.example.test",) and found.renewal_error is None
    expected = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    assert found.not_after == pytest.approx(expected.timestamp(), abs=120)

    clock = ManualClock(START)
    inputs = GatewayInputs(config=lambda: config, clock=clock)
    assert inputs.certificates() == [] and inputs.last_reload() is None
    asyncio.run(inputs.refresh())
    assert inputs.certificates() == [found]
    inputs.record_reload(False, "bastion.yaml:3: sites: must not be empty")
    reload = inputs.last_reload()
    assert reload is not None and (reload.ok, reload.at) == (False, START)
    assert inputs.period(0, 60) == {}  # no statistics store: traffic rules have no data


def test_a_reload_the_supervisor_rejected_is_seen_by_the_workers(tmp_path: Path) -> None:
    clock = ManualClock(START)
    inputs = GatewayInputs(reloads=(tmp_path, 4242), clock=clock)
    assert inputs.last_reload() is None
    write_reload_result(tmp_path, 4242, False, "bastion.yaml:1: sites: must not be empty", START)
    assert read_reload_result(tmp_path, 9999) is None  # another instance's
    reload = inputs.last_reload()
    assert reload is not None and (reload.ok, reload.error) == (
        False,
        "bastion.yaml:1: sites: must not be empty",
    )
    clock.advance(5)
    inputs.record_reload(True)  # a later reload the workers applied
    reload = inputs.last_reload()
    assert reload is not None and (reload.ok, reload.at) == (True, START + 5)
    assert (tmp_path / "last-reload.json").stat().st_mode & 0o077 == 0


def test_the_service_a_worker_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.config import LoadedConfig
    from bastion.observe.alerts.service import AlertService, record_rejected_reload

    monkeypatch.setenv("BASTION_INSTANCE", "4242")
    site = {"routes": [{"path": "/", "respond": {"status": 200}}]}
    plain = config_from_dict({"data_dir": str(tmp_path), "sites": [site]})
    rules = {"rules": {"reload": {"kind": "reload_failed", "period": 1}}}
    alerting = config_from_dict({"data_dir": str(tmp_path), "sites": [site], "alerts": rules})
    current: list[LoadedConfig] = [plain]

    async def main() -> None:
        service = AlertService(lambda: current[0], lambda: [], asyncio.get_running_loop())
        service.start()
        assert service.manager is None and service.status() == []  # no rules: idle
        current[0] = alerting
        service.reloaded(True)  # rules came with a reload: started
        assert service.manager is not None
        assert [s["name"] for s in service.status()] == ["reload"]
        record_rejected_reload(alerting, "bastion.yaml:2: sites: must not be empty")
        reload = service.inputs.last_reload()
        assert reload is not None and not reload.ok  # the supervisor's, newer
        service.stop()

    asyncio.run(main())


def test_consumer_quota_use_read_from_the_limit_store(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from bastion.http.request import Request
    from bastion.observe.alerts import QuotaUse
    from bastion.observe.alerts.quotas import consumer_quotas
    from bastion.policies.ratelimit_build import build_rate_limit
    from bastion.state.limits import MemoryLimitStore

    quotas = [
        {"limit": 10, "per": "day"},
        {"limit": 100, "per": "month", "name": "monthly"},
        {"limit": 5, "per": "day", "key": "client_ip"},  # not a consumer's
    ]
    config = config_from_dict(
        {
            "data_dir": str(tmp_path),
            "sites": [
                {
                    "hosts": ["api.example.test"],
                    "routes": [{"path": "/api/", "respond": {"status": 200}, "quotas": quotas}],
                }
            ],
        }
    ).config
    clock = ManualClock(START)
    store = MemoryLimitStore(clock=clock)
    site = config.sites[0]
    # the route's policy as the plan builds it, on this store (its builder reads only these)
    spec = SimpleNamespace(route=site.routes[0], site=site)
    build = SimpleNamespace(limit_store=store, trusted=None, events=None)
    policy = build_rate_limit(spec, build)  # type: ignore[arg-type]
    assert policy is not None
    for consumer, count in (("acme", 8), ("beta", 2), ("", 3)):
        for i in range(count):
            req = Request()
            req.client_ip, req.consumer = f"10.0.{len(consumer)}.{i}", consumer
            assert policy.on_request(req) is None

    assert consumer_quotas(config, store, clock.time()) == {
        "acme": QuotaUse(8, 10),  # the daily quota is the fuller one
        "beta": QuotaUse(2, 10),
    }
    clock.advance(86400)  # a new day: only the month's counts are left
    assert consumer_quotas(config, store, clock.time()) == {
        "acme": QuotaUse(8, 100),
        "beta": QuotaUse(2, 100),
    }


def test_statistics_can_be_plugged_in_later() -> None:
    inputs = GatewayInputs()
    assert inputs.period(0, 60) == {}
    inputs.use_statistics(lambda since, until, route: {"requests": int(until - since)})
    assert inputs.period(0, 60, "/api/") == {"requests": 60}
