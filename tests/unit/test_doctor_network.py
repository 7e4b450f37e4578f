"""bastion doctor's network checks against real servers on loopback: a fake DNS server
(tests/dnsfake.py), real listeners for the reachability probe, a fake ACME directory whose
clock is off. The machine's addresses come from a /proc-like fixture where the real /proc
cannot produce the case."""

from __future__ import annotations

import datetime as dt
import email.utils
import ipaddress
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bastion.doctor import DoctorContext, Status, diagnose
from bastion.doctor.acme_checks import check_clock
from bastion.doctor.config_check import check_config
from bastion.doctor.dns_checks import check_caa, check_dns
from bastion.doctor.reach import check_reach
from bastion.doctor.result import Finding
from conftest import free_port
from dnsfake import FakeDNS

LE = "https://acme-v02.api.letsencrypt.org/directory"
LE_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"


def config_text(http: str | None, https: str | None, directory: str, host: str) -> str:
    listen = {"http": [http] if http else [], "https": [https] if https else []}
    return json.dumps(
        {
            "listen": listen,
            "acme": {"directory": directory},
            "sites": [{"hosts": [host], "routes": [{"path": "/", "respond": {"body": "ok"}}]}],
        }
    )


def make_ctx(
    tmp_path: Path,
    dns: FakeDNS,
    *,
    directory: str = LE,
    host: str = "api.example.com",
    http: str | None = "127.0.0.1:8080",
    https: str | None = "127.0.0.1:8443",
    proc: Path | None = None,
    **options: Any,
) -> DoctorContext:
    path = tmp_path / "bastion.yaml"
    path.write_text(config_text(http, https, directory, host))
    ctx = DoctorContext(
        str(path),
        data_dir_flag=str(tmp_path / "data"),
        nameservers=(dns.host,),
        dns_port=dns.port,
        timeout=0.5,
        proc=proc or Path("/proc"),
        **options,
    )
    findings = list(check_config(ctx))
    assert ctx.loaded is not None, findings
    return ctx


def fake_proc(tmp_path: Path, ipv4: list[str], ipv6: tuple[str, ...] = ()) -> Path:
    """A /proc whose interfaces have these addresses (routing trie and if_inet6 formats)."""
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    trie = ["Main:", "  +-- 0.0.0.0/0 3 0 5"]
    for address in ["127.0.0.1", *ipv4]:
        trie += [f"     |-- {address}", "        /32 host LOCAL"]
    (proc / "net" / "fib_trie").write_text("\n".join(trie) + "\n")
    lines = ["00000000000000000000000000000001 01 80 10 80       lo"]
    for address in ipv6:
        hexed = ipaddress.IPv6Address(address).packed.hex()
        lines.append(f"{hexed} 02 40 00 80     eth0")
    (proc / "net" / "if_inet6").write_text("\n".join(lines) + "\n")
    return proc


def statuses(findings: list[Finding]) -> list[Status]:
    return [f.status for f in findings]


# ------------------------------------------------------------------------------ DNS


def test_name_pointing_at_this_machine_passes(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, ["93.184.215.14"], ("2a01:4f8:1:2::10",))
    zone = {"api.example.com": {"A": ["93.184.215.14"], "AAAA": ["2a01:4f8:1:2::10"]}}
    with FakeDNS(zone) as dns:
        findings = list(check_dns(make_ctx(tmp_path, dns, proc=proc)))
    assert statuses(findings) == [Status.PASS], findings
    assert "93.184.215.14, 2a01:4f8:1:2::10" in findings[0].found


def test_loopback_is_this_machine_for_a_private_ca_only(tmp_path: Path) -> None:
    with FakeDNS({"api.example.com": {"A": ["127.0.0.1"]}}) as dns:
        private = make_ctx(tmp_path, dns, directory="https://ca.internal.example/directory")
        assert statuses(list(check_dns(private))) == [Status.PASS]
        (public,) = list(check_dns(make_ctx(tmp_path, dns)))
    assert public.status is Status.FAIL and "cannot reach" in public.found


def test_missing_name_and_missing_records_fail(tmp_path: Path) -> None:
    with FakeDNS({"example.com": {"A": ["93.184.215.14"]}}) as dns:
        findings = list(check_dns(make_ctx(tmp_path, dns)))
        (nx,) = findings
        assert nx.status is Status.FAIL and "NXDOMAIN" in nx.found
    with FakeDNS({"api.example.com": {"TXT": ["x"]}}) as dns:
        (empty,) = list(check_dns(make_ctx(tmp_path, dns)))
    assert empty.status is Status.FAIL and "no A or AAAA record" in empty.found
    assert "add an A record" in empty.fix


def test_stale_aaaa_fails_while_the_a_record_is_right(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, ["93.184.215.14"], ("2a01:4f8:1:2::10",))
    zone = {"api.example.com": {"A": ["93.184.215.14"], "AAAA": ["2a01:4f8:9:9::99"]}}
    with FakeDNS(zone) as dns:
        (finding,) = list(check_dns(make_ctx(tmp_path, dns, proc=proc)))
    assert finding.status is Status.FAIL
    assert "AAAA 2a01:4f8:9:9::99" in finding.found and "2a01:4f8:1:2::10" in finding.found
    assert "AAAA record" in finding.fix


def test_aaaa_without_ipv6_here_fails(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, ["93.184.215.14"])
    zone = {"api.example.com": {"A": ["93.184.215.14"], "AAAA": ["2a01:4f8:9:9::99"]}}
    with FakeDNS(zone) as dns:
        (finding,) = list(check_dns(make_ctx(tmp_path, dns, proc=proc)))
    assert finding.status is Status.FAIL and "no public IPv6 address" in finding.found
    assert "delete the AAAA record" in finding.fix


def test_behind_nat_the_public_address_is_unknown(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, ["10.0.0.5"])
    with FakeDNS({"api.example.com": {"A": ["93.184.215.14"]}}) as dns:
        (finding,) = list(check_dns(make_ctx(tmp_path, dns, proc=proc)))
    assert finding.status is Status.WARN and "unknown" in finding.found


def test_private_address_fails_for_a_public_ca(tmp_path: Path) -> None:
    with FakeDNS({"api.example.com": {"A": ["10.9.8.7"]}}) as dns:
        (finding,) = list(check_dns(make_ctx(tmp_path, dns, proc=fake_proc(tmp_path, []))))
    assert finding.status is Status.FAIL and "cannot reach" in finding.found


def test_dead_dns_warns_quickly(tmp_path: Path) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # takes questions, never answers
    silent.bind(("127.0.0.1", 0))
    with silent, FakeDNS({}) as dns:
        ctx = make_ctx(tmp_path, dns)
        ctx.dns_port = silent.getsockname()[1]
        ctx.timeout = 0.2
        (finding,) = list(check_dns(ctx))
    assert finding.status is Status.WARN and "timeout" in finding.found


# ------------------------------------------------------------------------------ CAA


@pytest.mark.parametrize("directory", [LE, LE_STAGING])
def test_caa_allowing_letsencrypt_passes(tmp_path: Path, directory: str) -> None:
    zone = {"example.com": {"CAA": ['0 issue "letsencrypt.org"', '0 iodef "mailto:x@y.z"']}}
    with FakeDNS(zone) as dns:
        (finding,) = list(check_caa(make_ctx(tmp_path, dns, directory=directory)))
    assert finding.status is Status.PASS and "example.com allows letsencrypt.org" in finding.found


def test_caa_of_the_parent_forbidding_letsencrypt_fails(tmp_path: Path) -> None:
    zone = {"api.example.com": {"A": ["127.0.0.1"]}, "example.com": {"CAA": ['0 issue "pki.goog"']}}
    with FakeDNS(zone) as dns:
        (finding,) = list(check_caa(make_ctx(tmp_path, dns)))
    assert finding.status is Status.FAIL
    assert "prevents issuance" in finding.found and "pki.goog" in finding.found
    assert 'example.com. CAA 0 issue "letsencrypt.org"' in finding.fix


def test_caa_nearest_set_wins(tmp_path: Path) -> None:
    zone = {
        "api.example.com": {"CAA": ['0 issue "letsencrypt.org"']},
        "example.com": {"CAA": ['0 issue "pki.goog"']},
    }
    with FakeDNS(zone) as dns:
        (finding,) = list(check_caa(make_ctx(tmp_path, dns)))
    assert finding.status is Status.PASS


def test_caa_critical_unknown_property_fails(tmp_path: Path) -> None:
    zone = {"example.com": {"CAA": ['0 issue "letsencrypt.org"', '128 tbs "x"']}}
    with FakeDNS(zone) as dns:
        (finding,) = list(check_caa(make_ctx(tmp_path, dns)))
    assert finding.status is Status.FAIL and "critical" in finding.found


def test_caa_unknown_ca_cannot_tell(tmp_path: Path) -> None:
    zone = {"example.com": {"CAA": ['0 issue "letsencrypt.org"']}}
    with FakeDNS(zone) as dns:
        ctx = make_ctx(tmp_path, dns, directory="https://ca.internal.example/directory")
        (finding,) = list(check_caa(ctx))
    assert finding.status is Status.WARN and "cannot tell" in finding.found


def test_caa_servfail_fails(tmp_path: Path) -> None:
    with FakeDNS({"api.example.com": "SERVFAIL"}) as dns:
        (finding,) = list(check_caa(make_ctx(tmp_path, dns)))
    assert finding.status is Status.FAIL and "SERVFAIL" in finding.found


# ----------------------------------------------------------------------- reachability


def test_self_probe_reaches_this_machine_over_http(tmp_path: Path) -> None:
    port = free_port()
    with FakeDNS({"api.example.com": {"A": ["127.0.0.1"]}}) as dns:
        ctx = make_ctx(tmp_path, dns, http=f"127.0.0.1:{port}", challenge_ports={"http-01": port})
        findings = list(check_reach(ctx))
    assert statuses(findings) == [Status.PASS], findings
    assert "token came back" in findings[0].found
    with socket.socket() as s:  # the probe listener is gone: bastion can bind the port
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as bastion does
        s.bind(("127.0.0.1", port))


def test_self_probe_over_the_tls_port(tmp_path: Path) -> None:
    port = free_port()
    with FakeDNS({"api.example.com": {"A": ["127.0.0.1"]}}) as dns:
        ctx = make_ctx(
            tmp_path, dns, http=None, https=f"127.0.0.1:{port}",
            challenge_ports={"tls-alpn-01": port},
        )  # fmt: skip
        findings = list(check_reach(ctx))
    assert statuses(findings) == [Status.PASS], findings


class _OtherServer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Server", "nginx")
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def other_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OtherServer)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_another_server_on_the_challenge_port_fails(tmp_path: Path, other_server: int) -> None:
    port = free_port()
    with FakeDNS({"api.example.com": {"A": ["127.0.0.1"]}}) as dns:
        ctx = make_ctx(
            tmp_path, dns, http=f"127.0.0.1:{port}", challenge_ports={"http-01": other_server}
        )
        findings = list(check_reach(ctx))
    assert statuses(findings) == [Status.WARN, Status.FAIL], findings  # port differs, then
    assert "nginx" in findings[1].found


def test_unreachable_public_address_is_unknown_not_fail(tmp_path: Path) -> None:
    port = free_port()
    # a documentation address: not on an interface here, nothing answers there
    with FakeDNS({"api.example.com": {"A": ["192.0.2.1"]}}) as dns:
        ctx = make_ctx(
            tmp_path, dns, directory="https://ca.internal.example/directory",
            http=f"127.0.0.1:{port}", challenge_ports={"http-01": port},
        )  # fmt: skip
        ctx.timeout = 0.3
        findings = list(check_reach(ctx))
    assert statuses(findings) == [Status.WARN], findings
    assert "hairpin" in findings[0].found


# ------------------------------------------------------------------------------ clock


def directory_server(skew: dt.timedelta) -> ThreadingHTTPServer:
    class Directory(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"newOrder": "http://x/new-order"}).encode()
            self.send_response_only(200)
            now = dt.datetime.now(dt.UTC) + skew
            self.send_header("Date", email.utils.format_datetime(now, usegmt=True))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Directory)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


@pytest.mark.parametrize(
    ("skew", "status"),
    [(dt.timedelta(0), Status.PASS), (dt.timedelta(minutes=1), Status.WARN),
     (dt.timedelta(minutes=-10), Status.FAIL)],
)  # fmt: skip
def test_clock_against_the_acme_directory(
    tmp_path: Path, skew: dt.timedelta, status: Status
) -> None:
    server = directory_server(skew)
    url = f"http://127.0.0.1:{server.server_address[1]}/directory"
    try:
        with FakeDNS({}) as dns:
            (finding,) = list(check_clock(make_ctx(tmp_path, dns, directory=url)))
    finally:
        server.shutdown()
        server.server_close()
    assert finding.status is status, finding
    if status is Status.FAIL:
        assert "ahead of the CA's" in finding.found and "ntp" in finding.fix


def test_unreachable_acme_directory_fails(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/directory"
    with FakeDNS({}) as dns:
        (finding,) = list(check_clock(make_ctx(tmp_path, dns, directory=url)))
    assert finding.status is Status.FAIL and "cannot reach the ACME directory" in finding.found


def test_offline_skips_every_network_check(tmp_path: Path) -> None:
    with FakeDNS({"api.example.com": {"A": ["127.0.0.1"]}}) as dns:
        ctx = make_ctx(tmp_path, dns, offline=True)
        ctx.loaded = None  # diagnose loads it again
        report = diagnose(ctx)
        assert dns.asked == []
    by_id = {o.check.id: o for o in report.outcomes}
    for check in ("dns", "reach", "caa", "clock"):
        assert by_id[check].status is Status.SKIP
        assert "--offline" in by_id[check].findings[0].found


def test_a_dead_dns_server_leaves_every_check_an_answer(tmp_path: Path) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    with silent, FakeDNS({}) as dns:
        ctx = make_ctx(
            tmp_path, dns, http=f"127.0.0.1:{free_port()}", https=f"127.0.0.1:{free_port()}"
        )
        ctx.loaded, ctx.dns_port, ctx.timeout = None, silent.getsockname()[1], 0.2
        report = diagnose(ctx)
    by_id = {o.check.id: o for o in report.outcomes}
    assert "timeout" in by_id["dns"].findings[0].found
    assert "timeout" in by_id["caa"].findings[0].found
    assert "DNS did not answer" in by_id["clock"].findings[0].found
    assert all("no answer within" not in f.found for o in report.outcomes for f in o.findings)
