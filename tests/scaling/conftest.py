"""Fixtures for the scaling tests: a tiny Qwen2 built offline (same as tests/training)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    from searchr1.models.tiny import build_tiny_qwen2

    return str(build_tiny_qwen2(tmp_path_factory.mktemp("tiny") / "model", seed=0))
