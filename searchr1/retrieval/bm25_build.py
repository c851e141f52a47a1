"""Bounded-memory BM25 build: the corpus is streamed into sorted on-disk runs, then merged term block by block.

Pass 1 tokenises chunks of passages and buffers their ``(doc, term, tf)`` triples. When the buffer reaches the run
size (a share of ``memory_budget_mb``) it is sorted by term (docs stay ascending inside a term: chunks arrive in
corpus order) and written as a run folder under ``bm25_runs/``: the triples, the run's passage lengths, its
per-term posting counts and the terms it added to the vocabulary. Pass 2 sums the runs' counts into document
frequencies, then fills bm25s's CSC files (``data``/``indices``/``indptr``, the layout ``bm25s.BM25.save``
writes) one term block at a time: the block's output window is memory-mapped, every run's postings of those
terms are read in pieces, scored with the Lucene formulas (:func:`bm25_weights`) and written to their final
positions. A term's postings come run after run, so docs stay ascending; the scores equal a one-shot build's.

What stays in RAM whatever the corpus size: the vocabulary (term → id, plus the surface-word cache of
:class:`~searchr1.retrieval.bm25.DocTokenizer`), 20 bytes per passage (its length, store offset and the id hash
of the duplicate-id check) and the budgeted buffers. The vocabulary is the part the budget does not bound (wiki-18
has millions of terms).

Resumable after a kill: the manifest is written first with ``complete=false``; a run folder is written under a
temporary name and renamed when whole. A rerun with the same settings replays the finished runs' vocabulary
additions, copies their passages into the store without tokenising them, and carries on after them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bm25s
import numpy as np
from tqdm.auto import tqdm

from searchr1.retrieval.corpus import CorpusRecord, DocStoreWriter, corpus_size, iter_chunks, iter_corpus
from searchr1.retrieval.manifest import IndexMismatchError

log = logging.getLogger(__name__)
RUNS_DIR = "bm25_runs"
TERM_MAX_FILE = "term_max.npy"  # (V,) float32 max score per term, for MaxScore pruning (beside bm25s's files)
DEFAULT_MEMORY_BUDGET_MB = 2048.0
_RUN_BYTES_PER_PAIR = 40  # buffered triples (12 B) + the flush's sort order and sorted copies (28 B)
_PIECE_BYTES_PER_POSTING = 72  # a merge piece: triples read, float64 temporaries, int64 positions
_WINDOW_BYTES_PER_POSTING = 8  # a block's memory-mapped output window: float32 score + int32 doc


@dataclass(frozen=True)
class BuildLimits:
    """Buffer sizes of one build, derived from its memory budget.

    Attributes:
        run_pairs: distinct (passage, term) pairs buffered before a run is written.
        piece_postings: postings read and scored at once while merging.
        block_postings: postings of one block's output window (a single larger term gets a block alone).
    """

    run_pairs: int
    piece_postings: int
    block_postings: int

    @classmethod
    def from_budget(cls, memory_budget_mb: float) -> BuildLimits:
        """A quarter of the budget for the run buffer, an eighth each for a merge piece and a block window;
        the rest is left to the interpreter, the vocabulary and the per-passage arrays."""
        if memory_budget_mb <= 0:
            raise ValueError(f"memory_budget_mb must be > 0, got {memory_budget_mb}")
        budget = memory_budget_mb * 2**20
        return cls(
            run_pairs=max(1, int(budget / 4 / _RUN_BYTES_PER_PAIR)),
            piece_postings=max(1, int(budget / 8 / _PIECE_BYTES_PER_POSTING)),
            block_postings=max(1, int(budget / 8 / _WINDOW_BYTES_PER_POSTING)),
        )


def lucene_idf(df: np.ndarray, n_docs: int) -> np.ndarray:
    """``idf(t) = log(1 + (N - df_t + 0.5) / (df_t + 0.5))``: ``(V,)`` document frequencies → ``(V,)`` float64."""
    df = df.astype(np.float64)
    return np.log1p((n_docs - df + 0.5) / (df + 0.5))


def length_norm(doc_lens: np.ndarray, k1: float, b: float) -> np.ndarray:
    """``k1 * (1 - b + b * len_d / avg_len)``: ``(N,)`` passage lengths (tokens) → ``(N,)`` float64."""
    lens = doc_lens.astype(np.float64)
    return k1 * (1.0 - b + b * lens / max(float(lens.mean()), 1e-9))


def bm25_weights(idf: np.ndarray, norm: np.ndarray, terms: np.ndarray, docs: np.ndarray, tf: np.ndarray) -> np.ndarray:
    """Lucene BM25 ``S[d, t] = idf(t) * tf / (tf + norm(d))`` (Kamphuis et al. 2020), as ``bm25s`` stores it.

    Args:
        idf: ``(V,)`` from :func:`lucene_idf`.
        norm: ``(N,)`` from :func:`length_norm`.
        terms, docs, tf: ``(P,)`` postings: term id, passage row, term count.

    Returns:
        ``(P,)`` float32 scores.
    """
    return (idf[terms] * tf / (tf + norm[docs])).astype(np.float32)


def chunk_term_counts(token_ids: list[list[int]], first_doc: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-passage term frequencies of one chunk, sorted by (doc, term).

    Args:
        token_ids: token ids of each passage of the chunk.
        first_doc: global row of the chunk's first passage.

    Returns:
        ``(docs, terms, tf)``, each ``(P,)`` with one entry per distinct (doc, term) pair; int32, int32, float32.
    """
    lens = np.fromiter((len(t) for t in token_ids), dtype=np.int64, count=len(token_ids))
    flat = np.fromiter((w for t in token_ids for w in t), dtype=np.int64, count=int(lens.sum()))
    docs = np.repeat(np.arange(first_doc, first_doc + len(token_ids), dtype=np.int64), lens)
    keys, tf = np.unique((docs << 32) | flat, return_counts=True)
    return (keys >> 32).astype(np.int32), (keys & 0xFFFFFFFF).astype(np.int32), tf.astype(np.float32)


def _save(path: Path, arr: np.ndarray) -> None:
    np.save(path, arr, allow_pickle=False)


def write_run(
    run_dir: Path,
    parts: list[tuple[np.ndarray, ...]],
    lens: np.ndarray,
    first_doc: int,
    new_terms: list[str],
    vocab_size: int,
) -> None:
    """Write one run folder atomically (under ``<name>.tmp``, then renamed).

    Args:
        run_dir: the final folder path.
        parts: chunk triples ``(docs, terms, tf)`` in corpus order, each sorted by (doc, term).
        lens: ``(n,)`` int32 token counts of the run's passages.
        first_doc: row of the run's first passage.
        new_terms: terms the run added to the vocabulary, in id order.
        vocab_size: vocabulary size after the run.
    """
    docs, terms, tf = (np.concatenate(x) for x in zip(*parts))
    order = np.argsort(terms, kind="stable")  # stable: docs stay ascending inside each term
    counts = np.bincount(terms, minlength=vocab_size)
    term_ids = np.flatnonzero(counts).astype(np.int32)
    tmp = run_dir.with_name(run_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _save(tmp / "terms.npy", terms[order])
    _save(tmp / "docs.npy", docs[order])
    _save(tmp / "tf.npy", tf[order])
    _save(tmp / "doc_lens.npy", lens.astype(np.int32))
    _save(tmp / "term_ids.npy", term_ids)
    _save(tmp / "term_counts.npy", counts[term_ids].astype(np.int64))
    (tmp / "new_terms.txt").write_text("\n".join(new_terms), encoding="utf-8")  # terms are \w\w+: no newline
    meta = {"first_doc": first_doc, "num_docs": len(lens), "vocab_size": vocab_size, "pairs": len(terms)}
    (tmp / "meta.json").write_text(json.dumps(meta))
    tmp.rename(run_dir)


def check_source(runs_dir: Path, corpus: str) -> None:
    """Record the corpus (path, bytes) the runs come from, or refuse to resume runs of another corpus."""
    src = {"corpus": str(corpus), "bytes": corpus_size(corpus)}
    path = runs_dir / "source.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old["bytes"] != src["bytes"]:
            raise IndexMismatchError(
                f"{runs_dir} holds the runs of an unfinished build of {old['corpus']} ({old['bytes']} bytes), not of "
                f"{corpus} ({src['bytes']} bytes); delete {runs_dir} to start over"
            )
        return
    runs_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(src))


def finished_runs(runs_dir: Path) -> list[Path]:
    """The whole run folders of an interrupted build, in order (half-written ``*.tmp`` ones are deleted)."""
    if not runs_dir.is_dir():
        return []
    for tmp in runs_dir.glob("*.tmp"):
        shutil.rmtree(tmp)
    return sorted(p for p in runs_dir.iterdir() if p.is_dir() and p.name.startswith("run_"))


def replay_vocab(runs: list[Path], vocab: dict[str, int]) -> tuple[int, list[np.ndarray]]:
    """Re-add the runs' new terms to ``vocab`` in id order; return ``(passages covered, per-run lengths)``."""
    done, lens = 0, []
    for run in runs:
        meta = json.loads((run / "meta.json").read_text())
        if meta["first_doc"] != done:
            raise ValueError(f"{run}: starts at passage {meta['first_doc']}, expected {done}; delete {run.parent}")
        text = (run / "new_terms.txt").read_text(encoding="utf-8")
        for term in text.split("\n") if text else []:
            vocab[term] = len(vocab)
        if len(vocab) != meta["vocab_size"]:
            raise ValueError(f"{run}: vocabulary replay gives {len(vocab)} terms, not {meta['vocab_size']}")
        done += meta["num_docs"]
        lens.append(np.load(run / "doc_lens.npy"))
    return done, lens


class _Progress:
    """tqdm over the corpus bytes (so the ETA is real) with passages/s in the postfix."""

    def __init__(self, corpus: str, enabled: bool) -> None:
        self.bar = tqdm(total=corpus_size(corpus), desc="BM25 index", unit="B", unit_scale=True, disable=not enabled)
        self.start, self.passages = time.perf_counter(), 0

    def __call__(self, pos: int) -> None:
        self.bar.update(pos - self.bar.n)
        rate = self.passages / max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{self.passages:,} passages, {rate:,.0f} passages/s", refresh=False)

    def close(self, done: bool = True) -> None:
        """End the bar's line; ``done``: with the final passage count (the last byte-position update came before the
        last chunk was counted)."""
        if done:
            self(self.bar.total or self.bar.n)
        self.bar.close()


def tokenize_into_runs(
    records: Iterator[CorpusRecord],
    store: DocStoreWriter,
    tokenize,
    runs_dir: Path,
    limits: BuildLimits,
    chunk_size: int,
    progress: _Progress,
) -> list[np.ndarray]:
    """Pass 1: resume after the finished runs, tokenise the rest into new runs; return every run's lengths."""
    vocab = tokenize.vocab
    runs = finished_runs(runs_dir)
    done, lens = replay_vocab(runs, vocab)
    if runs:
        log.info("BM25 build: resuming after %d passages in %d finished runs", done, len(runs))
    for _ in range(done):  # passages of finished runs: into the store, not through the tokenizer
        rec = next(records, None)
        if rec is None:
            raise ValueError(f"the corpus has fewer passages than the {done} already indexed in {runs_dir}")
        store.add(rec)
    progress.passages = done
    parts, part_lens, pairs, vocab_before, first = [], [], 0, len(vocab), done
    for chunk in iter_chunks(records, chunk_size):
        token_ids = []
        for rec in chunk:
            store.add(rec)
            token_ids.append(tokenize(rec.contents))
        parts.append(chunk_term_counts(token_ids, len(store) - len(chunk)))
        part_lens.append(np.fromiter(map(len, token_ids), dtype=np.int32, count=len(token_ids)))
        pairs += len(parts[-1][0])
        progress.passages = len(store)
        if pairs >= limits.run_pairs:
            lens.append(_flush(runs_dir, len(lens), parts, part_lens, first, vocab, vocab_before))
            parts, part_lens, pairs, vocab_before, first = [], [], 0, len(vocab), len(store)
    if parts:
        lens.append(_flush(runs_dir, len(lens), parts, part_lens, first, vocab, vocab_before))
    return lens


def _flush(runs_dir: Path, i: int, parts: list, part_lens: list, first: int, vocab: dict, before: int) -> np.ndarray:
    lens = np.concatenate(part_lens)
    new_terms = list(vocab)[before:]  # dicts keep insertion order = id order
    write_run(runs_dir / f"run_{i:05d}", parts, lens, first, new_terms, len(vocab))
    return lens


def _block_bounds(indptr: np.ndarray, block_postings: int) -> list[tuple[int, int]]:
    """Term ranges ``[t0, t1)`` of at most ``block_postings`` postings each (a bigger term alone)."""
    bounds, t0, n_terms = [], 0, len(indptr) - 1
    while t0 < n_terms:
        t1 = int(np.searchsorted(indptr, indptr[t0] + block_postings, side="right")) - 1
        t1 = min(max(t1, t0 + 1), n_terms)
        bounds.append((t0, t1))
        t0 = t1
    return bounds


def _read(path: Path, lo: int, hi: int) -> np.ndarray:
    arr = np.load(path, mmap_mode="r")
    out = np.array(arr[lo:hi])  # a copy: the mapping closes with ``arr``
    del arr
    return out


def merge_runs(
    runs: list[Path],
    n_vocab: int,
    doc_lens: np.ndarray,
    out: Path,
    k1: float,
    b: float,
    limits: BuildLimits,
    progress: bool,
) -> None:
    """Pass 2: write ``data``/``indices``/``indptr`` ``.csc.index.npy`` (bm25s's names) into ``out``."""
    df = np.zeros(n_vocab, dtype=np.int64)
    for run in runs:
        df[np.load(run / "term_ids.npy")] += np.load(run / "term_counts.npy")
    indptr = np.zeros(n_vocab + 1, dtype=np.int64)
    np.cumsum(df, out=indptr[1:])
    idf, norm = lucene_idf(df, len(doc_lens)), length_norm(doc_lens, k1, b)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "indptr.csc.index.npy", indptr)
    term_max = np.zeros(n_vocab, dtype=np.float32)
    windows = {}
    for name, dtype in (("data", np.float32), ("indices", np.int32)):
        path = out / f"{name}.csc.index.npy"
        np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(int(indptr[-1]),)).flush()
        windows[name] = (path, dtype, np.load(path, mmap_mode="r").offset)
    for t0, t1 in tqdm(_block_bounds(indptr, limits.block_postings), desc="BM25 merge", disable=not progress):
        base, size = int(indptr[t0]), int(indptr[t1] - indptr[t0])
        data, indices = (
            np.memmap(p, dtype=dt, mode="r+", offset=off + base * np.dtype(dt).itemsize, shape=(size,))
            for p, dt, off in windows.values()
        )
        cursor = indptr[t0:t1] - base  # next free slot of each term inside the window
        for run in runs:
            terms_all = np.load(run / "terms.npy", mmap_mode="r")
            lo, hi = (int(x) for x in np.searchsorted(terms_all, [t0, t1]))
            del terms_all
            for a in range(lo, hi, limits.piece_postings):
                z = min(a + limits.piece_postings, hi)
                terms, docs, tf = (_read(run / f"{n}.npy", a, z) for n in ("terms", "docs", "tf"))
                rel = terms - t0
                rank = np.arange(len(terms)) - np.searchsorted(terms, terms)  # place inside the term's group
                pos = cursor[rel] + rank
                scores = bm25_weights(idf, norm, terms, docs, tf)
                data[pos] = scores
                starts = np.flatnonzero(np.r_[True, terms[1:] != terms[:-1]])  # a piece is sorted by term
                np.maximum.at(term_max, terms[starts], np.maximum.reduceat(scores, starts))
                indices[pos] = docs
                cursor += np.bincount(rel, minlength=t1 - t0)
        data.flush(), indices.flush()
        del data, indices
    np.save(out / TERM_MAX_FILE, term_max)


def write_bm25s_params(out: Path, k1: float, b: float, num_docs: int) -> None:
    """``params.index.json`` as ``bm25s.BM25.save`` writes it (so ``bm25s.BM25.load`` reads the folder)."""
    model = bm25s.BM25(k1=k1, b=b, method="lucene", backend="numpy")
    params = {
        "k1": k1,
        "b": b,
        "delta": model.delta,
        "method": model.method,
        "idf_method": model.idf_method,
        "dtype": model.dtype,
        "int_dtype": model.int_dtype,
        "num_docs": num_docs,
        "version": bm25s.__version__,
        "backend": model.backend,
    }
    (out / "params.index.json").write_text(json.dumps(params, indent=4))


def build_bm25_folder(
    corpus: str,
    out: Path,
    subdir: str,
    tokenize,
    k1: float,
    b: float,
    memory_budget_mb: float,
    chunk_size: int,
    show_progress: bool,
) -> tuple[int, str]:
    """Both passes into ``out`` (store) and ``out / subdir`` (bm25s files); return ``(num_docs, corpus sha256)``.

    ``tokenize`` is a :class:`~searchr1.retrieval.bm25.DocTokenizer` whose vocabulary holds only ``""``.
    """
    limits = BuildLimits.from_budget(memory_budget_mb)
    hasher = hashlib.sha256()
    progress = _Progress(corpus, show_progress)
    store = DocStoreWriter(out)
    runs_dir = out / RUNS_DIR
    check_source(runs_dir, corpus)
    try:
        lens = tokenize_into_runs(
            iter_corpus(corpus, hasher, progress), store, tokenize, runs_dir, limits, chunk_size, progress
        )
    except BaseException:
        progress.close(done=False)  # ends the bar's line: an error message starts on a line of its own
        raise
    progress.close()
    store.finish()
    if len(store) == 0:
        raise ValueError(f"the corpus {corpus} has no passages; nothing to index")
    index_dir = out / subdir
    merge_runs(
        finished_runs(runs_dir), len(tokenize.vocab), np.concatenate(lens), index_dir, k1, b, limits, show_progress
    )
    (index_dir / "vocab.index.json").write_text(json.dumps(tokenize.vocab, ensure_ascii=False), encoding="utf-8")
    write_bm25s_params(index_dir, k1, b, len(store))
    shutil.rmtree(runs_dir)
    return len(store), hasher.hexdigest()
