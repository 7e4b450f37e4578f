"""The doctor beside a running bastion: the reachability probe cannot listen on the port
the gateway holds, so it asks the gateway itself (through the fake DNS answer) and knows it
by its answer to an unknown challenge token."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bastion.doctor import DoctorContext, Status
from bastion.doctor.config_check import check_config
from bastion.doctor.ports import check_binding
from bastion.doctor.reach import check_reach
from conftest import Gateway, free_port
from dnsfake import FakeDNS


def test_probe_through_a_running_gateway(tmp_path: Path, gateway: Callable[..., Gateway]) -> None:
    http, https, dead = free_port(), free_port(), free_port()
    pid_file = tmp_path / "bastion.pid"
    config = {
        "listen": {"http": f"127.0.0.1:{http}", "https": f"127.0.0.1:{https}"},
        "pid_file": str(pid_file),
        # a CA that never answers: the gateway keeps serving while its orders fail
        "acme": {"directory": f"http://127.0.0.1:{dead}/directory"},
        "sites": [{"hosts": ["api.example.com"], "routes": [{"path": "/", "respond": {}}]}],
    }
    gw = gateway(config, port=http)
    with FakeDNS({"api.example.com": {"A": ["127.0.0.1"]}}) as dns:
        ctx = DoctorContext(
            str(gw.config_path), nameservers=(dns.host,), dns_port=dns.port,
            challenge_ports={"http-01": http}, pid_files=(pid_file,), unit_path=None,
        )  # fmt: skip
        assert [f.status for f in check_config(ctx)] == [Status.PASS]
        assert ctx.running_bastion == gw.pid
        reach = list(check_reach(ctx))
        bind = list(check_binding(ctx))
    assert [f.status for f in reach] == [Status.PASS], reach
    assert "running bastion answered" in reach[0].found
    assert [f.status for f in bind] == [Status.PASS, Status.PASS], bind
    assert all("held by" in f.found for f in bind)
