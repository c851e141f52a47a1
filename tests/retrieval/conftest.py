"""Fixtures for the retrieval tests: real corpora from tests/fixtures and a small built BM25 index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from searchr1.retrieval import BM25Retriever


@pytest.fixture(scope="session")
def hotpot_corpus(data_dir: Path) -> Path:
    """521-passage HotpotQA corpus (wiki-18 format, quoted titles)."""
    return data_dir / "hotpotqa_dev_sample" / "corpus.jsonl"


@pytest.fixture(scope="session")
def hotpot_questions(data_dir: Path) -> list[dict]:
    """53 HotpotQA dev questions with ``supporting_titles``."""
    path = data_dir / "hotpotqa_dev_sample" / "questions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def flashrag_corpus(data_dir: Path) -> Path:
    """1000 wiki-18 passages (121 titles without quotes)."""
    return data_dir / "flashrag_sample" / "wiki_sample_corpus.jsonl"


@pytest.fixture(scope="session")
def hotpot_index(tmp_path_factory: pytest.TempPathFactory, hotpot_corpus: Path) -> Path:
    """A saved BM25 index folder over the HotpotQA corpus."""
    out = tmp_path_factory.mktemp("hotpot_bm25")
    BM25Retriever.build(str(hotpot_corpus), str(out), show_progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory, hotpot_corpus: Path) -> Path:
    """A randomly initialised 2-layer BERT with a WordPiece tokenizer trained on the HotpotQA corpus.

    Saved with ``save_pretrained`` so the real ``from_pretrained`` loading path is exercised.
    """
    from searchr1.retrieval.corpus import iter_corpus
    from searchr1.retrieval.tiny import make_tiny_encoder

    out = tmp_path_factory.mktemp("tiny_bert")
    return make_tiny_encoder(out, (r.contents for r in iter_corpus(hotpot_corpus)))


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory, hotpot_corpus: Path) -> Path:
    """The first 250 HotpotQA passages (keeps the dense tests quick on 2 cores)."""
    out = tmp_path_factory.mktemp("small") / "corpus.jsonl"
    out.write_text("".join(hotpot_corpus.read_text().splitlines(keepends=True)[:250]))
    return out
