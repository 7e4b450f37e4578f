"""bastion doctor's local checks: ports (real listeners), backends, admin and metrics
exposure, the data dir, the issuance budget and certificates (fixture certificates made
with cryptography in a temp data dir), the systemd unit and the config itself. /proc-like
fixtures stand in where the real /proc cannot produce the case (no capability, tmpfs)."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from bastion.doctor import DoctorContext, Status, diagnose
from bastion.doctor.acme_checks import check_budget
from bastion.doctor.certs_check import check_certificates
from bastion.doctor.config_check import check_config
from bastion.doctor.ports import check_backends, check_binding, check_private_listeners
from bastion.doctor.result import Finding
from bastion.doctor.storage import check_data_dir
from bastion.doctor.unit import check_unit
from conftest import free_port

LE = "https://acme-v02.api.letsencrypt.org/directory"
LE_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
NOW = dt.datetime.now(dt.UTC)


def make_ctx(tmp_path: Path, config: dict[str, Any], **options: Any) -> DoctorContext:
    config = {"sites": [{"hosts": ["*"], "routes": [{"path": "/", "respond": {}}]}], **config}
    path = tmp_path / "bastion.yaml"
    path.write_text(json.dumps(config))
    options.setdefault("data_dir_flag", str(tmp_path / "data"))
    options.setdefault("unit_path", tmp_path / "no.service")
    ctx = DoctorContext(str(path), **options)
    findings = list(check_config(ctx))
    assert ctx.loaded is not None, findings
    return ctx


def acme_config(directory: str = LE, host: str = "api.example.com") -> dict[str, Any]:
    return {
        "listen": {"http": "127.0.0.1:8080", "https": "127.0.0.1:8443"},
        "acme": {"directory": directory},
        "sites": [{"hosts": [host], "routes": [{"path": "/", "respond": {}}]}],
    }


def fake_proc(tmp_path: Path, *, cap_eff: int = 0, mounts: str = "") -> Path:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "net").mkdir()
    (proc / "sys/net/ipv4").mkdir(parents=True)
    (proc / "self/status").write_text(f"Name:\tpython\nCapEff:\t{cap_eff:016x}\nCapAmb:\t0\n")
    (proc / "sys/net/ipv4/ip_unprivileged_port_start").write_text("1024\n")
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
    (proc / "net/tcp").write_text(header)
    (proc / "self/mounts").write_text(mounts)
    return proc


def only(findings: Iterator[Finding] | list[Finding]) -> Finding:
    (finding,) = list(findings)
    return finding


# ------------------------------------------------------------------------------ ports


@pytest.fixture
def listener_elsewhere() -> Iterator[int]:
    """A port held by another process (not bastion)."""
    port = free_port()
    code = (
        "import socket, sys, time\n"
        "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\n"
        "print('ready', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(port)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    yield port
    proc.kill()
    proc.wait()


def test_port_taken_by_another_process_fails(tmp_path: Path, listener_elsewhere: int) -> None:
    ctx = make_ctx(tmp_path, {"listen": {"http": f"127.0.0.1:{listener_elsewhere}"}})
    finding = only(check_binding(ctx))
    assert finding.status is Status.FAIL and "already in use" in finding.found
    assert f"sport = :{listener_elsewhere}" in finding.fix


def test_free_port_passes(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, {"listen": {"http": f"127.0.0.1:{free_port()}"}})
    assert only(check_binding(ctx)).status is Status.PASS


def test_low_port_without_the_capability_fails(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, {"listen": {"http": ":80"}}, proc=fake_proc(tmp_path), euid=1000)
    finding = only(check_binding(ctx))
    assert finding.status is Status.FAIL and "CAP_NET_BIND_SERVICE" in finding.found
    assert "setcap cap_net_bind_service=+ep" in finding.fix


def test_low_port_with_the_capability_passes(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, cap_eff=1 << 10)
    ctx = make_ctx(tmp_path, {"listen": {"http": ":80"}}, proc=proc, euid=1000)
    assert only(check_binding(ctx)).status is Status.PASS


def test_low_port_granted_by_the_systemd_unit_passes(tmp_path: Path) -> None:
    unit = tmp_path / "bastion.service"
    unit.write_text("[Service]\nUser=bastion\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n")
    ctx = make_ctx(
        tmp_path, {"listen": {"http": ":80"}}, proc=fake_proc(tmp_path), euid=1000,
        unit_path=unit,
    )  # fmt: skip
    finding = only(check_binding(ctx))
    assert finding.status is Status.PASS and "systemd unit" in finding.found


def test_listen_address_not_on_this_machine_fails(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, {"listen": {"http": "192.0.2.7:8080"}})
    assert "not an address of this machine" in only(check_binding(ctx)).found


def proxy_to(port: int) -> dict[str, Any]:
    route = {"path": "/", "proxy": {"upstreams": [f"http://127.0.0.1:{port}"]}}
    return {"sites": [{"hosts": ["*"], "routes": [route]}]}


@pytest.mark.parametrize("bind", ["0.0.0.0", "127.0.0.1", None])
def test_backend_listening_on_every_interface_warns(tmp_path: Path, bind: str | None) -> None:
    port = free_port()
    with socket.socket() as backend:
        if bind is not None:
            backend.bind((bind, port))
            backend.listen()
        finding = only(check_backends(make_ctx(tmp_path, proxy_to(port))))
    if bind == "0.0.0.0":
        assert finding.status is Status.WARN and f"0.0.0.0:{port}" in finding.found
        assert f"127.0.0.1:{port}:{port}" in finding.fix  # the Docker way too
    elif bind == "127.0.0.1":
        assert finding.status is Status.PASS and "loopback only" in finding.found
    else:
        assert finding.status is Status.WARN and "nothing listens" in finding.found


def test_public_metrics_fail_private_ones_pass(tmp_path: Path) -> None:
    wide = {"metrics": {"listen": f":{free_port()}", "allow": ["0.0.0.0/0"]}}
    finding = only(check_private_listeners(make_ctx(tmp_path, wide)))
    assert finding.status is Status.FAIL and "metrics.allow" in finding.found
    every = {"metrics": {"listen": f":{free_port()}"}}
    assert only(check_private_listeners(make_ctx(tmp_path, every))).status is Status.WARN
    local = {"metrics": {"listen": f"127.0.0.1:{free_port()}"}}
    assert only(check_private_listeners(make_ctx(tmp_path, local))).status is Status.PASS


def test_admin_on_loopback_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCTOR_ADMIN_TOKEN", "t" * 24)
    config = {"admin": {"listen": f"127.0.0.1:{free_port()}", "token": "${DOCTOR_ADMIN_TOKEN}"}}
    finding = only(check_private_listeners(make_ctx(tmp_path, config)))
    assert finding.status is Status.PASS and "only this machine" in finding.found


# --------------------------------------------------------------------------- data dir


def test_missing_data_dir_is_judged_by_its_parent_and_not_created(tmp_path: Path) -> None:
    target = tmp_path / "var" / "bastion"
    ctx = make_ctx(tmp_path, {}, data_dir_flag=str(target))
    findings = list(check_data_dir(ctx))
    assert [f.status for f in findings] == [Status.PASS]
    assert "does not exist yet" in findings[0].found
    assert not target.exists() and not target.parent.exists()


def test_data_dir_on_tmpfs_fails_with_acme_warns_without(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, mounts=f"tmpfs {tmp_path} tmpfs rw,nosuid 0 0\n")
    with_acme = list(check_data_dir(make_ctx(tmp_path, acme_config(), proc=proc)))
    assert Status.FAIL in [f.status for f in with_acme]
    assert any("tmpfs" in f.found and "rate limits" in f.found for f in with_acme)
    without = list(check_data_dir(make_ctx(tmp_path, {}, proc=proc)))
    assert [f.status for f in without] == [Status.PASS, Status.WARN]


def test_data_dir_open_to_others_warns(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir(mode=0o755)
    os.chmod(tmp_path / "data", 0o755)
    finding = only(check_data_dir(make_ctx(tmp_path, {})))
    assert finding.status is Status.WARN and "chmod 700" in finding.fix


# ----------------------------------------------------------------- certificate fixtures


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def issue(
    subject: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    key: ec.EllipticCurvePrivateKey,
    *,
    names: tuple[str, ...] = (),
    start: dt.datetime = NOW - dt.timedelta(days=1),
    days: float = 90,
    ca: bool = False,
    aia: bool = False,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        sans = [x509.DNSName(n) for n in names]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if aia:
        where = x509.UniformResourceIdentifier("http://r.example/int.der")
        access = [x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS, where)]
        builder = builder.add_extension(x509.AuthorityInformationAccess(access), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def authority() -> dict[str, Any]:
    root_key, int_key = _key(), _key()
    root = issue("Test Root", None, root_key, days=3650, ca=True)
    intermediate = issue("Test R1", (root, root_key), int_key, days=1000, ca=True, aia=True)
    return {"root": (root, root_key), "int": (intermediate, int_key)}


def write_pair(directory: Path, cert: bytes, key: bytes) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cert.pem").write_bytes(cert)
    (directory / "key.pem").write_bytes(key)
    return directory / "cert.pem", directory / "key.pem"


def files_site(cert: Path, key: Path) -> dict[str, Any]:
    site = {"hosts": ["api.example.com"], "tls": {"cert": str(cert), "key": str(key)},
            "routes": [{"path": "/", "respond": {}}]}  # fmt: skip
    return {"listen": {"https": f"127.0.0.1:{free_port()}"}, "sites": [site]}


@pytest.mark.parametrize(
    ("start", "days", "status", "text"),
    [
        (NOW - dt.timedelta(days=10), 100, Status.PASS, "chain complete"),
        (NOW - dt.timedelta(days=87), 90, Status.WARN, "expires in 2 days"),
        (NOW - dt.timedelta(days=91), 90, Status.FAIL, "expired on"),
    ],
)
def test_configured_certificate_expiry(
    tmp_path: Path, authority: dict[str, Any], start: dt.datetime, days: int,
    status: Status, text: str,
) -> None:  # fmt: skip
    key = _key()
    leaf = issue("api.example.com", authority["int"], key, names=("api.example.com",),
                 start=start, days=days, aia=True)  # fmt: skip
    cert, key_file = write_pair(tmp_path / "tls", pem(leaf, authority["int"][0]), key_pem(key))
    finding = only(check_certificates(make_ctx(tmp_path, files_site(cert, key_file))))
    assert finding.status is status and text in finding.found, finding


def test_leaf_without_its_intermediate_fails(tmp_path: Path, authority: dict[str, Any]) -> None:
    key = _key()
    leaf = issue("api.example.com", authority["int"], key, names=("api.example.com",), aia=True)
    cert, key_file = write_pair(tmp_path / "tls", pem(leaf), key_pem(key))
    finding = only(check_certificates(make_ctx(tmp_path, files_site(cert, key_file))))
    assert finding.status is Status.FAIL and "leaf only" in finding.found
    assert "fullchain.pem" in finding.fix


def test_chain_in_the_wrong_order_fails(tmp_path: Path, authority: dict[str, Any]) -> None:
    key = _key()
    leaf = issue("api.example.com", authority["int"], key, names=("api.example.com",))
    chain = pem(leaf, authority["root"][0], authority["int"][0])
    cert, key_file = write_pair(tmp_path / "tls", chain, key_pem(key))
    finding = only(check_certificates(make_ctx(tmp_path, files_site(cert, key_file))))
    assert finding.status is Status.FAIL and "did not issue" in finding.found


def acme_dir(tmp_path: Path, directory: str = LE, site: str = "api.example.com") -> Path:
    host = directory.split("/")[2]
    return tmp_path / "data" / "certs" / "acme" / host / site


def test_stored_acme_certificate_with_the_wrong_key_fails(
    tmp_path: Path, authority: dict[str, Any]
) -> None:
    leaf = issue("api.example.com", authority["int"], _key(), names=("api.example.com",))
    write_pair(acme_dir(tmp_path), pem(leaf, authority["int"][0]), key_pem(_key()))
    finding = only(check_certificates(make_ctx(tmp_path, acme_config())))
    assert finding.status is Status.FAIL and "is not the key of" in finding.found


# ----------------------------------------------------------------------------- budget


def store_certificates(
    tmp_path: Path, authority: dict[str, Any], count: int, age: dt.timedelta,
    directory: str = LE,
) -> None:  # fmt: skip
    """``count`` certificates for api.example.com, issued ``age`` ago, as kept in the store."""
    folder = acme_dir(tmp_path, directory)
    folder.mkdir(parents=True)
    for index in range(count):
        leaf = issue("api.example.com", authority["int"], _key(), names=("api.example.com",),
                     start=NOW - age)  # fmt: skip
        (folder / ("cert.pem" if index == 0 else f"cert-{index}.pem")).write_bytes(pem(leaf))


@pytest.mark.parametrize(
    ("count", "age", "directory", "status"),
    [
        (5, dt.timedelta(days=2), LE, Status.FAIL),
        (3, dt.timedelta(days=2), LE, Status.WARN),
        (5, dt.timedelta(days=10), LE, Status.PASS),  # out of the 7-day window
        (5, dt.timedelta(days=2), LE_STAGING, Status.PASS),  # the limits are production's
    ],
)
def test_issuance_budget(
    tmp_path: Path, authority: dict[str, Any], count: int, age: dt.timedelta,
    directory: str, status: Status,
) -> None:  # fmt: skip
    store_certificates(tmp_path, authority, count, age, directory)
    finding = only(check_budget(make_ctx(tmp_path, acme_config(directory))))
    assert finding.status is status, finding
    if age.days < 7:
        assert f"{count} certificates for these names" in finding.found


def test_a_rate_limited_last_order_fails(tmp_path: Path) -> None:
    folder = acme_dir(tmp_path)
    folder.mkdir(parents=True)
    error = "2026-12-01T10:00:00+00:00 urn:ietf:params:acme:error:rateLimited too many certificates"
    (folder / "status.json").write_text(json.dumps({"last_error": error}))
    finding = only(check_budget(make_ctx(tmp_path, acme_config())))
    assert finding.status is Status.FAIL and "rate limit" in finding.found


# ------------------------------------------------------------------------ systemd unit


def unit_file(tmp_path: Path, exec_start: str, extra: str = "", name: str = "bastion") -> Path:
    path = tmp_path / f"{name}.service"
    path.write_text(f"[Unit]\nDescription=bastion\n\n[Service]\nExecStart={exec_start}\n{extra}")
    return path


def test_unit_running_a_missing_program_fails(tmp_path: Path) -> None:
    unit = unit_file(tmp_path, "/nonexistent/bin/bastion run -c /etc/bastion/bastion.yaml")
    findings = list(check_unit(make_ctx(tmp_path, {}, unit_path=unit)))
    assert findings[0].status is Status.FAIL and "does not exist" in findings[0].found
    assert findings[1].status is Status.WARN and "not the config checked here" in findings[1].found


def test_unit_without_the_capability_for_port_80_fails(tmp_path: Path) -> None:
    config = {"listen": {"http": ":80"}}
    ctx = make_ctx(tmp_path, config, proc=fake_proc(tmp_path), euid=0)
    ctx.unit_path = unit_file(
        tmp_path, f"{sys.executable} -m bastion run -c {ctx.config_path}", "User=bastion\n"
    )
    findings = list(check_unit(ctx))
    assert [f.status for f in findings] == [Status.PASS, Status.PASS, Status.FAIL], findings
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in findings[2].fix
    ctx.unit_path = unit_file(
        tmp_path, f"{sys.executable} -m bastion run -c {ctx.config_path}",
        "User=bastion\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n", name="granted",
    )  # fmt: skip
    assert [f.status for f in check_unit(ctx)] == [Status.PASS] * 3


# ----------------------------------------------------------------------------- config


def test_config_error_fails_with_its_line_and_skips_what_needs_it(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_text("listen:\n  http: 127.0.0.1:8080\nsites:\n  - hosts: [a.test]\n    rutes: []\n")
    report = diagnose(DoctorContext(str(path), data_dir_flag=str(tmp_path / "d"), offline=True))
    by_id = {o.check.id: o for o in report.outcomes}
    assert by_id["config"].status is Status.FAIL
    assert f"{path}:4" in by_id["config"].findings[0].found
    for check in ("bind", "backends", "certs", "budget", "private", "redis"):
        assert by_id[check].status is Status.SKIP, check
    assert by_id["data-dir"].status is Status.PASS  # judged without the config
    assert report.failed


def test_redis_is_skipped_until_the_config_has_it(tmp_path: Path) -> None:
    report = diagnose(make_ctx(tmp_path, {}, offline=True))
    redis = next(o for o in report.outcomes if o.check.id == "redis")
    assert redis.status is Status.SKIP and "no state.redis" in redis.findings[0].found


def test_the_installed_units_data_dir_and_pid_file_are_the_ones_judged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BASTION_DATA_DIR", raising=False)
    unit = unit_file(
        tmp_path, "/usr/bin/bastion run -c /etc/bastion/bastion.yaml",
        f"User=root\nEnvironment=BASTION_DATA_DIR={tmp_path}/state XDG_RUNTIME_DIR=/run/bastion\n",
    )  # fmt: skip
    ctx = make_ctx(tmp_path, {}, unit_path=unit, data_dir_flag=None)
    assert ctx.data_dir == tmp_path / "state"
    assert ctx.unit is not None and ctx.unit.pid_file() == Path("/run/bastion/bastion-0.pid")


def test_a_config_that_does_not_load_still_names_its_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BASTION_DATA_DIR", raising=False)
    path = tmp_path / "bastion.yaml"
    path.write_text(f"data_dir: {tmp_path}/state\nsites: []\n")
    report = diagnose(DoctorContext(str(path), offline=True, unit_path=None))
    data_dir = next(o for o in report.outcomes if o.check.id == "data-dir")
    assert report.data_dir == tmp_path / "state"
    assert f"{tmp_path}/state (the config's data_dir)" in data_dir.findings[0].found
