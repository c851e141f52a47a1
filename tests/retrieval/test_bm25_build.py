"""Bounded-memory BM25 build: runs + term-block merge give the one-run build's files byte for byte, and a build
killed mid-way resumes from its finished runs to the same index."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from searchr1.retrieval import BM25Retriever, IndexMismatchError
from searchr1.retrieval.bm25_build import RUNS_DIR, BuildLimits, lucene_idf

FILES = (
    "data.csc.index.npy",
    "indices.csc.index.npy",
    "indptr.csc.index.npy",
    "vocab.index.json",
    "term_max.npy",
)


def _same_index(a: Path, b: Path) -> None:
    for name in FILES:
        assert (a / "bm25" / name).read_bytes() == (b / "bm25" / name).read_bytes(), name
    for name in ("docs.jsonl", "doc_offsets.npy"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_limits_scale_with_budget() -> None:
    small, big = BuildLimits.from_budget(64), BuildLimits.from_budget(2048)
    # 2 GB: a quarter / 40 B per buffered pair, an eighth / 8 B per window posting; 64 MB: 1/32 of each
    assert (big.run_pairs, big.block_postings) == (2048 * 2**20 // 4 // 40, 2048 * 2**20 // 8 // 8)
    assert (small.run_pairs, small.block_postings) == (64 * 2**20 // 4 // 40, 64 * 2**20 // 8 // 8)
    with pytest.raises(ValueError, match="memory_budget_mb must be > 0"):
        BuildLimits.from_budget(0)


def test_lucene_idf_by_hand() -> None:
    # N = 4: df 1 -> log(1 + 3.5 / 1.5) = log(3.3333); df 4 -> log(1 + 0.5 / 4.5) = log(1.1111)
    np.testing.assert_allclose(lucene_idf(np.array([1, 4]), 4), np.log([10 / 3, 10 / 9]))


def test_tiny_budget_equals_one_run_build(tmp_path: Path, flashrag_corpus: Path) -> None:
    one, many = tmp_path / "one", tmp_path / "many"
    BM25Retriever.build(str(flashrag_corpus), str(one), show_progress=False)
    # 0.2 MB: ~1300 pairs a run (the 1000 passages make ~60 runs), ~360-posting pieces, ~3300-posting blocks
    BM25Retriever.build(str(flashrag_corpus), str(many), show_progress=False, memory_budget_mb=0.2, chunk_size=7)
    _same_index(one, many)
    assert not (many / RUNS_DIR).exists()  # runs are deleted once merged
    queries = ["football clubs in england", "who was the lobbyist for genentech"]
    assert BM25Retriever(index_dir=str(one)).search(queries, 5) == BM25Retriever(index_dir=str(many)).search(queries, 5)


# the child dies by SIGKILL while writing the third file of its 21st run (a half-written ``run_00020.tmp``)
_CHILD = """
import os, signal, sys
from searchr1.retrieval import BM25Retriever, bm25_build
saves, save = [0], bm25_build._save
def dying_save(path, arr):
    saves[0] += 1
    if saves[0] == 20 * 6 + 3:
        os.kill(os.getpid(), signal.SIGKILL)
    save(path, arr)
bm25_build._save = dying_save
BM25Retriever.build(sys.argv[1], sys.argv[2], show_progress=False, memory_budget_mb=0.2, chunk_size=3)
"""


@pytest.mark.slow
def test_killed_build_resumes_to_the_same_index(
    tmp_path: Path, flashrag_corpus: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = tmp_path / "corpus.jsonl"
    rows = [json.loads(line) for line in flashrag_corpus.read_text().splitlines() if line.strip()]
    copies = [{**row, "id": f"{row['id']}-{c}"} for c in range(2) for row in rows]  # ids unique, as required
    corpus.write_text("".join(json.dumps(row) + "\n" for row in copies))  # 2000 passages: ~100 runs of ~1300 pairs
    out, ref = tmp_path / "killed", tmp_path / "ref"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    child = subprocess.run([sys.executable, "-c", _CHILD, str(corpus), str(out)], env=env, timeout=120)
    assert child.returncode == -signal.SIGKILL
    assert (out / RUNS_DIR / "run_00020.tmp").is_dir()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False
    kept = [p for p in (out / RUNS_DIR).glob("run_*") if not p.name.endswith(".tmp")]
    assert len(kept) == 20
    covered = sum(json.loads((p / "meta.json").read_text())["num_docs"] for p in kept)
    with pytest.raises(IndexMismatchError, match="build did not finish"):
        BM25Retriever(index_dir=str(out))
    with pytest.raises(IndexMismatchError, match="other settings"):
        BM25Retriever.build(str(corpus), str(out), k1=1.5, show_progress=False)
    with pytest.raises(IndexMismatchError, match="holds the runs of an unfinished build"):
        BM25Retriever.build(str(flashrag_corpus), str(out), show_progress=False)  # another corpus, same settings
    with caplog.at_level(logging.INFO, logger="searchr1.retrieval.bm25_build"):
        BM25Retriever.build(str(corpus), str(out), show_progress=False, memory_budget_mb=0.2, chunk_size=3)
    assert f"resuming after {covered} passages in {len(kept)} finished runs" in caplog.text
    BM25Retriever.build(str(corpus), str(ref), show_progress=False)
    _same_index(out, ref)
    assert json.loads((out / "manifest.json").read_text())["complete"] is True
    assert len(BM25Retriever(index_dir=str(out))) == 2000
