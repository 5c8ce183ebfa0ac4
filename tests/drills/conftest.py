"""Fixtures of the fault drills (helpers in tests/drills/harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.drills.harness import Broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    own = Broker(tmp_path / "services")
    own.start()
    try:
        yield own
    finally:
        own.stop()
