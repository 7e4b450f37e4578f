"""ChallengeTokens: the file backend every worker of a machine shares, and the memory one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.state.challenges import ChallengeTokens, FileChallengeTokens, MemoryChallengeTokens

Backend = Callable[[Path], ChallengeTokens]
BACKENDS: list[Backend] = [FileChallengeTokens, lambda _: MemoryChallengeTokens()]


@pytest.mark.parametrize("make", BACKENDS, ids=["file", "memory"])
def test_round_trip(tmp_path: Path, make: Backend) -> None:
    tokens = make(tmp_path)
    assert tokens.lookup("tok_en-1") is None
    tokens.publish("tok_en-1", "tok_en-1.thumb")
    tokens.publish("other", "other.thumb")
    assert tokens.lookup("tok_en-1") == b"tok_en-1.thumb"
    tokens.unpublish("tok_en-1")
    assert tokens.lookup("tok_en-1") is None
    assert tokens.lookup("other") == b"other.thumb"
    tokens.unpublish("tok_en-1")  # twice: nothing to do


@pytest.mark.parametrize("make", BACKENDS, ids=["file", "memory"])
def test_invalid_tokens(tmp_path: Path, make: Backend) -> None:
    tokens = make(tmp_path)
    for bad in ("", "../x", "a/b", "a.b", "x" * 257):
        with pytest.raises(ValueError):
            tokens.publish(bad, "answer")
        assert tokens.lookup(bad) is None
        tokens.unpublish(bad)


def test_file_tokens_are_seen_by_every_worker(tmp_path: Path) -> None:
    """Two instances on one data dir: the worker ordering and the one the CA reaches."""
    ordering, answering = FileChallengeTokens(tmp_path), FileChallengeTokens(tmp_path)
    ordering.publish("tok", "tok.thumb")
    assert answering.lookup("tok") == b"tok.thumb"
    ordering.unpublish("tok")
    assert answering.lookup("tok") is None


def test_file_layout_is_the_existing_one(tmp_path: Path) -> None:
    FileChallengeTokens(tmp_path).publish("tok", "tok.thumb")
    assert (tmp_path / "acme" / "challenges" / "tok").read_bytes() == b"tok.thumb"
    # written by an earlier version: read the same way
    (tmp_path / "acme" / "challenges" / "old").write_bytes(b"old.thumb")
    assert FileChallengeTokens(tmp_path).lookup("old") == b"old.thumb"
