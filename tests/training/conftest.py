"""Fixtures for end-to-end training tests: a tiny Qwen2 built offline, BM25 over the HotpotQA sample."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "hotpotqa_dev_sample"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    from searchr1.models.tiny import build_tiny_qwen2

    return str(build_tiny_qwen2(tmp_path_factory.mktemp("tiny") / "model", seed=0))


@pytest.fixture(scope="session")
def bm25():
    from searchr1.retrieval import BM25Retriever

    return BM25Retriever(corpus=str(DATA / "corpus.jsonl"))
