"""Fixtures for the reliability tests (a saved BM25 index, the tiny tokenizer) and the figures they report.

Tests add their measured figures (faults survived, fuzz cases run, load numbers, resume equality) with
``record_figure``; the terminal summary prints them, and ``SEARCHR1_RELIABILITY_REPORT=path.json`` also writes
them as JSON (the numbers in docs/reliability.md come from that).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "hotpotqa_dev_sample"
FIGURES: dict[str, object] = {}


def record_figure(name: str, value: object) -> None:
    """Keep a measured figure for the end-of-run summary (summed when the value is a number already present)."""
    if isinstance(value, int | float) and isinstance(FIGURES.get(name), int | float):
        FIGURES[name] = FIGURES[name] + value
    else:
        FIGURES[name] = value


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for name in sorted(FIGURES):
        terminalreporter.write_line(f"{name}: {FIGURES[name]}")
    path = os.environ.get("SEARCHR1_RELIABILITY_REPORT")
    if path:
        Path(path).write_text(json.dumps(FIGURES, indent=2, sort_keys=True, default=str) + "\n")


@pytest.fixture(scope="session")
def corpus_path() -> Path:
    """The 521-passage HotpotQA sample corpus."""
    return DATA / "corpus.jsonl"


@pytest.fixture(scope="session")
def questions() -> list[dict]:
    """The 53 HotpotQA sample questions (``question``, ``golden_answers``)."""
    return [json.loads(line) for line in (DATA / "questions.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory: pytest.TempPathFactory, corpus_path: Path) -> Path:
    """A saved BM25 index folder over the HotpotQA sample (what ``searchr1-retrieval serve`` loads)."""
    from searchr1.retrieval import BM25Retriever

    out = tmp_path_factory.mktemp("bm25")
    BM25Retriever.build(str(corpus_path), str(out), show_progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny random Qwen2 + tokenizer (built once into the user cache, as ``searchr1 fit`` does)."""
    from searchr1.models.tiny import ensure_tiny_model

    return ensure_tiny_model()


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir: Path):
    """The tiny model's tokenizer loaded through ``AutoTokenizer``."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)
