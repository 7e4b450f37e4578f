"""The trace context written upstream (proxy/tracing.py) and the event counters' merge
(observe/events.py), without sockets."""

from __future__ import annotations

from bastion.http.ids import RequestIds
from bastion.http.request import Request
from bastion.observe.events import EventCounters, auth_reason, merge
from bastion.proxy.headers import build_request_head
from bastion.proxy.tracing import valid_traceparent

VALID = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_valid_traceparents() -> None:
    assert valid_traceparent(VALID) == VALID
    assert valid_traceparent(b" " + VALID + b" ") == VALID  # optional whitespace
    later = b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02-more-fields"
    assert valid_traceparent(later) == b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
    for bad in (
        b"",
        VALID[:-1],
        VALID + b"-x",
        VALID.replace(b"00-", b"ff-", 1),
        VALID.upper(),
        b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-" + b"0" * 16 + b"-01",
        b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
    ):
        assert valid_traceparent(bad) is None, bad


def test_request_ids_are_trace_ids() -> None:
    request_ids = RequestIds()  # the worker's (ServerContext.request_ids)
    ids = [request_ids.next() for _ in range(3)]
    assert len(set(ids)) == 3
    for rid in ids:
        assert len(rid) == 32 and int(rid, 16) and rid == rid.lower()


def test_request_ids_count_in_hex_across_the_table_of_last_digits() -> None:
    # the last three digits come from a table and the rest is formatted once per 4,096:
    # the ids must be what formatting the whole counter each time gives, at every carry
    ids = RequestIds()
    start = ids.counter
    for n in range(1, 3 * 4096 + 2):
        rid = ids.next()
        assert rid == ids.prefix + f"{start + n:016x}", n
    ids = RequestIds(start=(1 << 61) - 2)  # a carry through every digit of the counter
    assert ids.next()[16:] == "1fffffffffffffff"
    assert ids.next()[16:] == "2000000000000000"
    assert ids.next()[16:] == "2000000000000001"


def _head(headers: list[tuple[bytes, bytes]], trace: bool = True) -> tuple[bytes, Request]:
    req = Request()
    req.method = "GET"
    req.client_ip = "192.0.2.1"
    req.request_id = "0123456789abcdef1000000000000001"
    req.headers = [(n.lower(), n, v) for n, v in headers]
    head = build_request_head(req, b"/", b"Host: b\r\n", b"a", b"http", None, trace=trace)
    return head, req


def test_the_head_carries_one_trace_context() -> None:
    head, req = _head([])
    rid = b"0123456789abcdef1000000000000001"
    assert b"\r\ntraceparent: 00-" + rid + b"-1000000000000001-01\r\n" in head
    assert req.trace_id == rid.decode()
    head, req = _head([(b"traceparent", VALID), (b"tracestate", b"a=1"), (b"TraceState", b"b=2")])
    assert head.count(b"traceparent") == 1 and b"traceparent: " + VALID + b"\r\n" in head
    assert b"tracestate: a=1,b=2\r\n" in head and head.lower().count(b"tracestate") == 1
    # two fields: a new trace, the state dropped
    head, req = _head([(b"traceparent", VALID), (b"Traceparent", VALID), (b"tracestate", b"a")])
    assert head.lower().count(b"traceparent") == 1 and b"tracestate" not in head.lower()
    assert req.trace_id == rid.decode()
    # off: untouched
    head, req = _head([(b"traceparent", b"junk")], trace=False)
    assert b"traceparent: junk\r\n" in head and req.trace_id == ""


def test_counters_merge_across_workers() -> None:
    a, b = EventCounters(), EventCounters()
    a.upstream_error("p", "e", "connect")
    b.upstream_error("p", "e", "connect")
    a.auth_failure("/r", "jwt", 401, "expired")
    b.rate_limit_refusal("/r", "quota")
    a.reload(True, 100.0)
    b.reload(True, 200.0)
    b.reload(False, 300.0)
    merged = merge([a.snapshot(), b.snapshot(), {"garbage": 1}])
    assert merged["upstream_errors"][("p", "e", "connect")] == 2
    assert merged["auth_failures"][("/r", "jwt", "expired")] == 1
    assert merged["rate_limit_refusals"][("/r", "quota")] == 1
    assert merged["reloads"] == {"success": 2, "failure": 1}
    assert merged["last_reload_success"] == 200.0


def test_auth_reasons_are_a_fixed_set() -> None:
    assert auth_reason(401, "The token has expired.") == "invalid"
    assert auth_reason(401, "expired") == "expired"
    assert auth_reason(403, "") == "forbidden"
    assert auth_reason(400, "") == "malformed"
    assert auth_reason(503, "") == "unavailable"
