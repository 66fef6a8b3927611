"""Fixtures shared by every test package; helpers live in `tests/harness.py`."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from coexist.config import Settings
from coexist.sandbox import servers as sandbox
from tests.harness import make_data_dir


@pytest.fixture(scope="session")
def shared_sandbox() -> Iterator[Settings]:
    """One sandbox for the session; tests that need it reseed or reset what they use."""
    data_dir = make_data_dir()
    settings = Settings(data_dir=data_dir)
    sandbox.up(settings)
    try:
        yield settings
    finally:
        sandbox.down(settings)
        shutil.rmtree(data_dir, ignore_errors=True)
