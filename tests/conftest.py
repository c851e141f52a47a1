"""Shared pytest fixtures: paths to the real data samples in ``tests/fixtures``."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Folder with the copied real samples (see tests/fixtures/README.md)."""
    return DATA
