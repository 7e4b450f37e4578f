"""Which instances run a config other than the majority's (`bastion status`, the admin
API's /api/instances)."""

from __future__ import annotations

import time

from bastion.state.instances import alive, mark_drift, render


def records(*hashes: str) -> list[dict[str, object]]:
    return [
        {"id": f"h:{n}", "config_hash": h, "version": "1", "last_seen": time.time()}
        for n, h in enumerate(hashes)
    ]


def test_the_odd_one_out_is_marked() -> None:
    found = records("aaa", "bbb", "aaa")
    assert mark_drift(found) == "aaa"
    assert [r["drift"] for r in found] == [False, True, False]
    flagged = [line for line in render(found, "aaa").splitlines() if "differs" in line]
    assert len(flagged) == 1 and flagged[0].startswith("h:1 ")


def test_one_config_everywhere_marks_none() -> None:
    found = records("aaa", "aaa")
    assert mark_drift(found) == "aaa"
    assert not any(r["drift"] for r in found)
    assert "differs" not in render(found, "aaa")


def test_no_majority_marks_every_instance() -> None:
    found = records("aaa", "bbb")
    assert mark_drift(found) is None
    assert all(r["drift"] for r in found)
    assert render(found, None).count("no majority") == 2


def test_instances_not_heard_from_lately_are_not_listed() -> None:
    now = time.time()
    found = {
        b"h:1": b'{"id": "h:1", "config_hash": "a", "last_seen": %f}' % now,
        b"h:2": b'{"id": "h:2", "config_hash": "a", "last_seen": %f}' % (now - 60),
        b"h:3": b"not json",
    }
    assert [r["id"] for r in alive(found, now)] == ["h:1"]
