"""Hybrid (RRF) retrieval: hand-computed fusion, fusion of real retrievers, and real all-MiniLM-L6-v2 recall on
the HotpotQA sample beside BM25 (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from searchr1.retrieval import BM25Retriever
from searchr1.retrieval.dense import DenseRetriever, build_dense_index
from searchr1.retrieval.encoder import TextEncoder
from searchr1.retrieval.hybrid import HybridRetriever, reciprocal_rank_fusion
from searchr1.retrieval.recall import title_recall

KS = (1, 3, 5, 10)


def test_rrf_by_hand() -> None:
    # k = 60: row 1 = 1/61 + 1/62 = .032522, row 3 = 1/63 + 1/61 = .032266, row 2 = 1/62 = .016129
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 1]], rrf_k=60, topk=3)
    assert fused.rows == [1, 3, 2]
    assert fused.scores == pytest.approx([1 / 61 + 1 / 62, 1 / 63 + 1 / 61, 1 / 62])
    assert reciprocal_rank_fusion([[5, 4], [4, 5]], 60, 2).rows == [4, 5]  # tied: lower row first


def test_title_recall_by_hand() -> None:
    from searchr1.retrieval.types import Passage

    results = [[Passage("0", "A", ""), Passage("1", "B", "")], [Passage("2", "C", "")]]
    # q1 gold {A, Z}: @1 finds A; q2 gold {C}: @1 finds C -> 2/3 at k=1 and k=2
    assert title_recall(results, [["A", "Z"], ["C"]], (1, 2)) == {1: 2 / 3, 2: 2 / 3}


def test_hybrid_fuses_bm25_and_dense(
    tmp_path: Path, hotpot_corpus: Path, hotpot_index: Path, tiny_encoder_dir: Path, small_corpus: Path
) -> None:
    dense_dir = tmp_path / "dense"
    build_dense_index(
        str(hotpot_corpus), str(dense_dir), TextEncoder(str(tiny_encoder_dir), max_length=32), show_progress=False
    )
    bm25, dense = BM25Retriever(index_dir=str(hotpot_index)), DenseRetriever(index_dir=str(dense_dir))
    hybrid = HybridRetriever([bm25, dense], depth=20)
    queries = ["Ed Wood film director", "Scott Derrickson nationality", "Shirley Temple"]
    got = hybrid.search_hits(queries, 5)
    for q, h in zip(queries, got):
        want = reciprocal_rank_fusion(
            [bm25.search_hits([q], 20)[0].rows, dense.search_hits([q], 20)[0].rows], hybrid.rrf_k, 5
        )
        assert h == want
    assert [p.id for p in hybrid.search(queries[:1], 5)[0]] == [bm25.docs.contents(r)[0] for r in got[0].rows]
    other = tmp_path / "other"
    build_dense_index(
        str(small_corpus), str(other), TextEncoder(str(tiny_encoder_dir), max_length=32), show_progress=False
    )
    with pytest.raises(ValueError, match="same corpus"):
        HybridRetriever([bm25, DenseRetriever(index_dir=str(other))])
    with pytest.raises(ValueError, match="at least two"):
        HybridRetriever([bm25])


@pytest.mark.slow
def test_minilm_dense_and_hybrid_recall_on_hotpotqa(
    tmp_path: Path, hotpot_corpus: Path, hotpot_index: Path, hotpot_questions: list[dict]
) -> None:
    from searchr1.retrieval.cli import index_main
    from searchr1.retrieval.packaged import minilm_dir

    model = minilm_dir(tmp_path / "minilm")
    out = tmp_path / "dense"
    index_main(
        [
            "build",
            "--corpus",
            str(hotpot_corpus),
            "--retriever",
            "dense",
            "--out",
            str(out),
            "--encoder",
            str(model),
            "--preset",
            "minilm",
            "--device",
            "cpu",
        ]
    )
    bm25 = BM25Retriever(index_dir=str(hotpot_index))
    dense = DenseRetriever(index_dir=str(out), device="cpu")
    assert dense.manifest.settings["query_prefix"] == "" and dense.manifest.settings["pooling"] == "mean"
    questions = [q["question"] for q in hotpot_questions]
    gold = [q["supporting_titles"] for q in hotpot_questions]
    recall = {
        name: title_recall(r.search(questions, 10), gold, KS)
        for name, r in (("bm25", bm25), ("dense", dense), ("hybrid", HybridRetriever([bm25, dense])))
    }
    print("recall@1/3/5/10:", {n: [round(v[k], 3) for k in KS] for n, v in recall.items()})
    assert recall["dense"][5] >= 0.6  # a random encoder gets ~0.02; the real one ~0.8 (docs/retrieval.md)
    assert recall["hybrid"][5] >= max(recall["bm25"][5], recall["dense"][5])
