"""Shared pytest fixtures: paths to the real data samples in ``tests/fixtures``; the embedded default run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Folder with the copied real samples (see tests/fixtures/README.md)."""
    return DATA


@pytest.fixture(scope="session")
def default_fit(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, dict]:
    """``searchr1 fit`` with no option (the embedded default, whole: 15 rollout steps), run once per session through
    the console script as a new user runs it, for the tests that check its terminal, summary, files and printed next
    commands (``tests/learning/test_default_run.py``, ``tests/evaluation/test_reproduce_training.py``).

    Returns the folder it ran in (the summary's paths are relative to it), the finished process and ``summary.json``.
    """
    at = tmp_path_factory.mktemp("default_fit")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}  # Python's default warning filters
    env["TOKENIZERS_PARALLELISM"] = "false"
    searchr1 = str(Path(sys.executable).with_name("searchr1"))
    proc = subprocess.run([searchr1, "fit"], cwd=at, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-6000:])
    return at, proc, json.loads((at / "runs" / "learn_cpu" / "summary.json").read_text())
