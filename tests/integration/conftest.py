"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.pebble_support import Pebble, pebble_factory


@pytest.fixture
def pebble(tmp_path: Path) -> Iterator[Callable[..., Pebble]]:
    """A factory of real Pebble ACME servers (see ``tests/pebble_support.py``)."""
    yield from pebble_factory(tmp_path)
