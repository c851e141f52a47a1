"""Shared pytest fixtures: paths to the real data samples in ``tests/data``."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Folder with the copied real samples (see tests/data/README.md)."""
    return DATA
