"""Retrieval at scale: prints ONE JSON line about BM25 build/search and dense ANN indexes on a big synthetic corpus.

The corpus is wiki-18-shaped (``{"id", "contents": "\\"Title\\"\\ntext"}``, 60-120 words a passage, 2-4 title
words) with Zipf word frequencies over a lexicon whose head is the real words of the HotpotQA and FlashRAG samples
(most frequent first) and whose tail is made-up words, so real TriviaQA/PopQA questions hit real posting lists.

Figures: ``build_wall_s`` and ``build_peak_rss_mb`` (``searchr1-index build --retriever bm25`` as a child process,
its ``ru_maxrss``), ``index_bytes`` (the whole folder), ``load_s`` (``BM25Retriever(index_dir=...)`` in a fresh
process), ``qps_batch_<B>`` for one-query calls (B = 1) and B-query calls (16/256/2560), each size over the same
2,560 queries (the sample questions cycled, ``dedup=False`` so every query is searched),
``p50_ms_batch_<B>``/``p99_ms_batch_<B>`` per call, then dense:
``dense_<kind>_qps`` and ``dense_<kind>_recall_at_10`` (vs exact ``Flat`` search) on random unit vectors of
dimension 384 (HNSW32, IVF+PQ from :func:`~searchr1.retrieval.dense.make_faiss_index`).

Usage: ``nice -n 10 python benchmarks/retrieval_scale.py --passages 1000000 --workdir /tmp/scale``
(the corpus is written once into ``--workdir`` and reused by later runs with the same size).
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = [ROOT / "tests" / "fixtures", Path("/work/shared/data")]
QUESTION_SETS = ("triviaqa_sample", "popqa_sample", "hotpotqa_dev_sample")


def _data_file(*parts: str) -> Path | None:
    for base in DATA:
        if (base.joinpath(*parts)).is_file():
            return base.joinpath(*parts)
    return None


def real_lexicon() -> list[str]:
    """Words of the HotpotQA and FlashRAG sample corpora, most frequent first."""
    counts: dict[str, int] = {}
    for parts in (("hotpotqa_dev_sample", "corpus.jsonl"), ("flashrag_sample", "wiki_sample_corpus.jsonl")):
        path = _data_file(*parts)
        if path is None:
            continue
        for line in path.read_text().splitlines():
            for w in re.findall(r"\w+", json.loads(line)["contents"].lower()):
                counts[w] = counts.get(w, 0) + 1
    return sorted(counts, key=lambda w: -counts[w])


def synthetic_corpus(path: Path, n: int, vocab: int = 500_000, seed: int = 0) -> None:
    """Write ``n`` passages (see the module doc) to ``path``."""
    rng = np.random.default_rng(seed)
    lexicon = real_lexicon()
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    while len(lexicon) < vocab:
        lexicon.append("".join(rng.choice(letters, size=int(rng.integers(4, 11)))))
    lex = np.array(lexicon[:vocab], dtype=object)
    probs = 1.0 / np.arange(1, vocab + 1) ** 1.05
    cdf = np.cumsum(probs / probs.sum())
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        for start in range(0, n, 10_000):
            m = min(10_000, n - start)
            lens = rng.integers(60, 121, size=m)
            words = lex[np.minimum(np.searchsorted(cdf, rng.random(int(lens.sum()))), vocab - 1)]
            ends = np.cumsum(lens)
            lines = []
            for i in range(m):
                ws = words[ends[i] - lens[i] : ends[i]]
                t = 2 + i % 3
                contents = '"' + " ".join(ws[:t]).title() + '"\n' + " ".join(ws[t:])
                lines.append(json.dumps({"id": str(start + i), "contents": contents}))
            fh.write("\n".join(lines) + "\n")
    tmp.replace(path)


def questions() -> list[str]:
    out = []
    for name in QUESTION_SETS:
        path = _data_file(name, "questions.jsonl")
        if path is not None:
            out += [json.loads(x)["question"] for x in path.read_text().splitlines() if x.strip()]
    return out


def build(corpus: Path, out: Path, budget_mb: float | None) -> dict:
    """``searchr1-index build --retriever bm25`` as a child; wall time and the child's peak RSS."""
    code = (
        "import sys; from searchr1.retrieval.cli import index_main; "
        "index_main(['build', '--corpus', sys.argv[1], '--retriever', 'bm25', '--out', sys.argv[2]"
        + (f", '--memory-budget-mb', '{budget_mb}'" if budget_mb else "")
        + "])"
    )
    cmd = [sys.executable, "-c", code, str(corpus), str(out)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"build_wall_s": round(wall, 1), "build_peak_rss_mb": round(peak_kb / 1024), "index_bytes": size}


_SEARCH_CHILD = """
import json, sys, time
import numpy as np
t0 = time.perf_counter()
from searchr1.retrieval import BM25Retriever
r = BM25Retriever(index_dir=sys.argv[1], dedup=False, search_threads=int(sys.argv[3]))
load = time.perf_counter() - t0
qs = json.loads(sys.argv[2])
qs = [qs[i % len(qs)] for i in range(int(sys.argv[4]))]  # every batch size searches the same queries
r.search_hits(qs[:64], 3)  # warm-up: page in the posting lists of common terms
out = {"load_s": round(load, 2), "search_threads": r.search_threads}
for b in (1, 16, 256, 2560):
    times = []
    for start in range(0, len(qs), b):
        s = time.perf_counter(); r.search_hits(qs[start : start + b], 3); times.append(time.perf_counter() - s)
    out[f"qps_batch_{b}"] = round(len(qs) / sum(times), 1)
    out[f"p50_ms_batch_{b}"] = round(1000 * float(np.percentile(times, 50)), 2)
    out[f"p99_ms_batch_{b}"] = round(1000 * float(np.percentile(times, 99)), 2)
print(json.dumps(out))
"""


def search(index: Path, threads: int, n_queries: int) -> dict:
    """Load time and q/s per batch size in a fresh process."""
    qs = questions()
    res = subprocess.run(
        [sys.executable, "-c", _SEARCH_CHILD, str(index), json.dumps(qs), str(threads), str(n_queries)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def dense(n: int, dim: int = 384, n_queries: int = 500) -> dict:
    """HNSW32 and IVF,PQ q/s and recall@10 against exact search, on random unit vectors."""
    import faiss

    from searchr1.retrieval.dense import make_faiss_index

    rng = np.random.default_rng(0)
    xb = rng.standard_normal((n, dim), dtype=np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    noise = rng.standard_normal((n_queries, dim), dtype=np.float32) * (0.5 / np.sqrt(dim))  # norm ~0.5
    xq = xb[rng.choice(n, n_queries, replace=False)] + noise
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    flat = faiss.IndexFlatIP(dim)
    flat.add(xb)
    _, truth = flat.search(xq, 10)
    cells = max(16, int(np.sqrt(n)))
    out: dict = {"dense_vectors": n, "dense_dim": dim}
    nbits = 8 if min(n, 40 * cells) >= 39 * 256 else 4  # 8-bit PQ codebooks want >= 39 * 256 training vectors
    ivf = f"IVF{cells},PQ48x{nbits}"
    for kind, factory, knob in (("hnsw32", "HNSW32", ("efSearch", 64)), ("ivfpq", ivf, ("nprobe", 32))):
        index = make_faiss_index(dim, factory)
        start = time.perf_counter()
        if not index.is_trained:
            index.train(xb[rng.choice(n, min(n, 40 * cells), replace=False)])
        index.add(xb)
        out[f"dense_{kind}_build_s"] = round(time.perf_counter() - start, 1)
        if knob[0] == "efSearch":
            faiss.downcast_index(index).hnsw.efSearch = knob[1]
        else:
            faiss.extract_index_ivf(index).nprobe = knob[1]
        start = time.perf_counter()
        _, got = index.search(xq, 10)
        out[f"dense_{kind}_qps"] = round(n_queries / (time.perf_counter() - start), 1)
        out[f"dense_{kind}_recall_at_10"] = round(
            float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), truth.tolist())])), 3
        )
        out[f"dense_{kind}_{knob[0]}"] = knob[1]
        out[f"dense_{kind}_factory"] = factory
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passages", type=int, default=1_000_000)
    parser.add_argument("--workdir", default="/tmp/searchr1_retrieval_scale")
    parser.add_argument("--memory-budget-mb", type=float, default=None, help="BM25 build budget (default: its own)")
    parser.add_argument("--dense-vectors", type=int, default=100_000, help="random vectors for the dense part")
    parser.add_argument("--skip-dense", action="store_true")
    parser.add_argument("--search-threads", type=int, default=2, help="BM25Retriever(search_threads=...)")
    parser.add_argument("--queries", type=int, default=2560, help="queries searched at every batch size")
    parser.add_argument("--vocab", type=int, default=500_000, help="lexicon size of the synthetic corpus")
    parser.add_argument(
        "--reuse-index", action="store_true", help="search the index a previous run built (no build figures)"
    )
    args = parser.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / f"synthetic_{args.passages}{'' if args.vocab == 500_000 else f'_v{args.vocab}'}.jsonl"
    start = time.perf_counter()
    if not corpus.exists():
        synthetic_corpus(corpus, args.passages, vocab=args.vocab)
    out: dict = {"passages": args.passages, "corpus_bytes": corpus.stat().st_size}
    out["corpus_write_s"] = round(time.perf_counter() - start, 1)
    index = work / f"bm25_{args.passages}"
    if not (args.reuse_index and (index / "manifest.json").is_file()):
        if index.exists():
            subprocess.run(["rm", "-rf", str(index)], check=True)
        out.update(build(corpus, index, args.memory_budget_mb))
    out.update(search(index, args.search_threads, args.queries))
    if not args.skip_dense:
        out.update(dense(args.dense_vectors))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
