"""BM25 retriever on ``bm25s`` (Lucene BM25, numpy/scipy backend, memory-mapped load).

Departures from plain ``bm25s.BM25.index``: the index is built by :mod:`~searchr1.retrieval.bm25_build` from a
*stream* of corpus chunks into sorted on-disk runs merged term block by term block, within a memory budget
(``bm25s`` itself keeps a Python list of token lists for the whole corpus), with the same Lucene formulas (a
test checks it equals ``bm25s``'s own index). The result is a regular ``bm25s`` folder loaded with
``mmap=True``. Queries of one call are scored in sub-batches, each one sparse product ``Q @ S^T`` (``Q``:
``(b, V)`` query term counts, ``S^T``: the ``(V, N)`` CSR view of bm25s's CSC scores) instead of ``bm25s``'s
per-query loop. A sub-batch holds consecutive queries whose posting lists add up to at most
``sub_batch_postings``, so its ``(b, N)`` result, and the memory of a call, stay bounded however big the batch
(one product over a whole big batch made a result of hundreds of millions of non-zeros at 1M passages and was
slower than a loop); sub-batches run on ``search_threads`` threads (scipy's product releases the GIL). A query
whose posting lists add up to ``prune_min_postings`` or more is scored alone with exact MaxScore pruning instead
(:mod:`~searchr1.retrieval.bm25_search`: its common terms are only looked up for the passages that can still
reach the top k; same results as the product, ties included). The CSR
product needs no format conversion or index sorting before the per-query top-k. Tokenisation matches
``bm25s.tokenize``: lowercase, ``\\b\\w\\w+\\b`` words, stopwords removed, then an optional stemmer
(``stemmer="porter"``, the default: the original Porter algorithm of PyStemmer's Snowball, what Lucene's
PorterStemFilter and so pyserini, Search-R1's BM25, apply; ``"none"`` keeps whole words). On the HotpotQA sample
Porter stemming lifts recall@5 of the supporting titles from 0.689 to 0.755 (recall@10 0.887 → 0.925).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bm25s
import numpy as np
import scipy.sparse as sp
from bm25s.stopwords import STOPWORDS_EN, STOPWORDS_EN_PLUS

from searchr1.registry import Registry
from searchr1.retrieval.base import StoreRetriever
from searchr1.retrieval.bm25_build import DEFAULT_MEMORY_BUDGET_MB, TERM_MAX_FILE, build_bm25_folder
from searchr1.retrieval.bm25_search import maxscore_row, term_max_scores
from searchr1.retrieval.corpus import DocStore, corpus_hash
from searchr1.retrieval.manifest import IndexManifest, start_build
from searchr1.retrieval.types import Hits

STOPWORDS: Registry[frozenset[str]] = Registry("stopword list")
STOPWORDS.register("en")(frozenset(STOPWORDS_EN))
STOPWORDS.register("en_plus")(frozenset(STOPWORDS_EN_PLUS))
STOPWORDS.register("none")(frozenset())
_WORD = re.compile(r"(?u)\b\w\w+\b")
BM25_SUBDIR = "bm25"


def stopword_set(name: str) -> frozenset[str]:
    """Stopwords by registry name (``en``, ``en_plus``, ``none``; an unknown name lists the valid ones)."""
    return STOPWORDS.get(name)


Stem = Callable[[list[str]], list[str]]


def make_stemmer(name: str) -> Stem | None:
    """The word-list stemmer of a name: ``none`` (no stemming, returns None) or a PyStemmer Snowball algorithm
    (``porter``: original Porter, as Lucene/pyserini; ``english``: Porter2; ...). PyStemmer caches stems."""
    if name == "none":
        return None
    import Stemmer

    if name not in Stemmer.algorithms():
        raise ValueError(f"unknown stemmer {name!r}; valid: {['none', *sorted(Stemmer.algorithms())]}")
    return Stemmer.Stemmer(name).stemWords


class DocTokenizer:
    """Passage text → term ids, adding new terms (stemmed words) to ``vocab``; an empty passage gets the ``""``
    token. Each distinct surface word is stopword-checked and stemmed once and remembered, so a word seen before
    costs one dict lookup (stemming every word made the 100k-passage synthetic build twice as slow). The memory
    is emptied when it holds ``cache_words`` words, so a corpus with tens of millions of distinct surface forms
    (numbers, typos) does not grow it without bound; only the vocabulary keeps every term.

    Args:
        vocab: term → id, grown in place.
        stopwords: words dropped before stemming.
        stem: word-list stemmer, or None.
        cache_words: surface words remembered at most.
    """

    def __init__(
        self, vocab: dict[str, int], stopwords: frozenset[str], stem: Stem | None = None, cache_words: int = 2_000_000
    ) -> None:
        self.vocab = vocab
        self.stopwords = stopwords
        self.stem = stem
        self.cache_words = cache_words
        self._ids: dict[str, int] = {}  # surface word → term id, -1 for a stopword

    def _new_word(self, word: str) -> int:
        if word in self.stopwords:
            wid = -1
        else:
            term = self.stem([word])[0] if self.stem is not None else word
            wid = self.vocab.setdefault(term, len(self.vocab))
        if len(self._ids) >= self.cache_words:
            self._ids.clear()  # in place: a running __call__ holds this dict
        self._ids[word] = wid
        return wid

    def __call__(self, text: str) -> list[int]:
        known = self._ids
        ids = []
        for word in _WORD.findall(text.lower()):
            wid = known.get(word)
            if wid is None:
                wid = self._new_word(word)
            if wid >= 0:
                ids.append(wid)
        if not ids:
            ids.append(self.vocab.setdefault("", len(self.vocab)))
        return ids


def tokenize_query(
    text: str, vocab: dict[str, int], stopwords: frozenset[str] = frozenset(), stem: Stem | None = None
) -> list[int]:
    """Token ids of a query: stopwords dropped and words stemmed as in the index; terms outside ``vocab`` dropped
    (without a stemmer the stopwords need no lookup: they are never in ``vocab``)."""
    words = _WORD.findall(text.lower())
    if stem is not None:
        words = stem([w for w in words if w not in stopwords])
    return [vocab[w] for w in words if w in vocab]


def query_matrix(token_ids: list[list[int]], n_vocab: int) -> sp.csc_matrix:
    """``(V, B)`` query term counts in canonical CSC form (terms sorted, repeats summed: a repeated query
    term counts twice, as in ``bm25s``), built directly rather than through scipy's slower COO path.
    Its transpose ``.T`` is the ``(B, V)`` CSR matrix the search multiplies with, at no cost.

    Args:
        token_ids: the ``B`` queries' token ids.
        n_vocab: ``V``.
    """
    lens = np.fromiter(map(len, token_ids), dtype=np.int64, count=len(token_ids))
    terms = np.fromiter((t for c in token_ids for t in c), dtype=np.int64, count=int(lens.sum()))
    keys, counts = np.unique(
        np.repeat(np.arange(len(token_ids), dtype=np.int64), lens) * n_vocab + terms, return_counts=True
    )
    indptr = np.zeros(len(token_ids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys // n_vocab, minlength=len(token_ids)), out=indptr[1:])
    return sp.csc_matrix((counts.astype(np.float32), keys % n_vocab, indptr), shape=(n_vocab, len(token_ids)))


def plan_sub_batches(costs: np.ndarray, max_cost: int) -> list[tuple[int, int]]:
    """Split consecutive queries into ``[start, end)`` groups whose ``costs`` (posting counts) sum to at most
    ``max_cost``; a query costing more than ``max_cost`` gets a group alone. ``(B,)`` costs → groups in order."""
    bounds, start, total = [], 0, 0
    for i, c in enumerate(costs.tolist()):
        if i > start and total + c > max_cost:
            bounds.append((start, i))
            start, total = i, 0
        total += c
    if len(costs):
        bounds.append((start, len(costs)))
    return bounds


def topk_per_row(scores: sp.csr_matrix, k: int) -> list[Hits]:
    """Top ``k`` columns of each row of a sparse ``(B, N)`` score matrix, best first.

    Ties break by lower column (all columns tied with the ``k``-th score are considered, not an arbitrary
    subset). Only stored (matching) columns are returned: a row with fewer than ``k`` non-zeros gets fewer hits,
    and a query without any indexed term gets none (as Lucene/pyserini, which only score passages that hold a
    query term; padding with score-0 passages would show the policy unrelated text as search results). Column
    indices need not be sorted.

    Returns:
        per row, :class:`Hits` of at most ``k`` columns (store rows) and float scores.
    """
    n_cols = scores.shape[1]
    k = min(k, n_cols)
    data, indices = scores.data, scores.indices
    bounds = scores.indptr.tolist()
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        vals, cols = data[lo:hi], indices[lo:hi]
        if hi - lo > k:
            kth = -np.partition(-vals, k - 1)[k - 1]  # the k-th best score
            keep = np.flatnonzero(vals >= kth)  # every column tied with it too
            vals, cols = vals[keep], cols[keep]
        order = np.lexsort((cols, -vals))[:k]
        out.append(Hits(cols[order].tolist(), vals[order].tolist()))
    return out


class BM25Retriever(StoreRetriever):
    """BM25 search over a saved index folder, or over a corpus file indexed in memory.

    Args:
        index_dir: folder written by :meth:`build` / ``searchr1-index build --retriever bm25``. If it does
            not exist and ``corpus`` is given, the index is built there first.
        corpus: corpus ``.jsonl``/``.jsonl.gz``. Alone: indexed in memory (demos, a few thousand passages).
            With an existing ``index_dir``: checked against the manifest's corpus hash.
        k1: BM25 ``k1`` (build only; a saved index keeps its own).
        b: BM25 ``b`` (build only).
        stopwords: stopword list name (build only): ``en``, ``en_plus`` or ``none``.
        stemmer: ``none`` or a PyStemmer algorithm such as ``porter`` (build only; a saved index keeps its own
            and stems queries with it).
        mmap: memory-map the saved score matrix instead of reading it into RAM.
        dedup: send each distinct query of a batch once (see :class:`~searchr1.retrieval.base.CachedRetriever`).
        cache_size: LRU entries kept across calls (0 = off).
        show_progress: progress bar while building.
        sub_batch_postings: postings scored by one sparse product at most (a query with more gets one alone);
            bounds the memory of a call (~12 bytes a posting per thread).
        search_threads: threads over the sub-batches of one call (1 = the calling thread only).
        prune_min_postings: queries with at least this many postings are scored alone with MaxScore pruning
            (None: never; small corpora never reach the default).
    """

    def __init__(
        self,
        index_dir: str | None = None,
        corpus: str | None = None,
        k1: float = 0.9,
        b: float = 0.4,
        stopwords: str = "en",
        stemmer: str = "porter",
        mmap: bool = True,
        dedup: bool = True,
        cache_size: int = 0,
        show_progress: bool = False,
        sub_batch_postings: int = 1_000_000,
        search_threads: int = 2,
        prune_min_postings: int | None = 50_000,
    ) -> None:
        super().__init__(dedup=dedup, cache_size=cache_size)
        if sub_batch_postings < 1 or search_threads < 1:
            raise ValueError(
                f"sub_batch_postings and search_threads must be >= 1, got {sub_batch_postings}, {search_threads}"
            )
        self.sub_batch_postings, self.search_threads = sub_batch_postings, search_threads
        self.prune_min_postings = prune_min_postings
        self._pool: ThreadPoolExecutor | None = None  # started by the first call with several sub-batches
        if index_dir is None and corpus is None:
            raise ValueError("BM25Retriever needs index_dir (a built index folder) or corpus (a .jsonl file)")
        self._tmp = tempfile.TemporaryDirectory() if index_dir is None else None  # in-memory use: a temp folder
        folder = index_dir if index_dir is not None else self._tmp.name
        if not (Path(folder) / "manifest.json").exists() and corpus is not None:
            self.build(corpus, folder, k1, b, stopwords, stemmer=stemmer, show_progress=show_progress)
        self.manifest = IndexManifest.load(folder)
        expected = corpus_hash(corpus) if corpus is not None and index_dir is not None else None
        self.manifest.check("bm25", corpus_sha256=expected)
        self.model = bm25s.BM25.load(str(Path(folder) / BM25_SUBDIR), mmap=mmap, load_vocab=True)
        self.docs = DocStore.load(folder)
        stopwords = self.manifest.settings.get("stopwords", "en")
        stemmer = self.manifest.settings.get("stemmer", "none")  # indexes built before stemming existed
        self.stemmer = stemmer
        self._stem = make_stemmer(stemmer)
        self._stopwords = stopword_set(stopwords)
        s = self.model.scores
        # bm25s's CSC (N, V) score matrix read as its (V, N) CSR transpose: each term's posting list is a row
        self._terms_by_doc = sp.csr_matrix(
            (s["data"], s["indices"], s["indptr"]), shape=(len(s["indptr"]) - 1, s["num_docs"]), copy=False
        )
        self.vocab: dict[str, int] = self.model.vocab_dict
        self._postings = np.diff(np.asarray(s["indptr"]))  # (V,) posting-list length of each term
        self._term_max: np.ndarray | None = None  # (V,) max score per term, read or computed on first pruning
        self._index_dir = Path(folder) / BM25_SUBDIR

    @property
    def saved_index(self) -> Path | None:
        """The index folder this retriever reads, or None when it indexed a corpus in memory (a temp folder)."""
        return None if self._tmp is not None else self._index_dir.parent

    @classmethod
    def build(
        cls,
        corpus: str,
        out_dir: str,
        k1: float = 0.9,
        b: float = 0.4,
        stopwords: str = "en",
        chunk_size: int = 10_000,
        show_progress: bool = True,
        stemmer: str = "porter",
        memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    ) -> IndexManifest:
        """Index ``corpus`` into ``out_dir`` (passage store, ``bm25/`` bm25s folder, ``manifest.json``).

        Resumable: rerun the same call after a kill and the finished runs are kept (see
        :mod:`~searchr1.retrieval.bm25_build`); ``memory_budget_mb`` bounds the build's buffers.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        settings = {
            "k1": k1,
            "b": b,
            "stopwords": stopwords,
            "stemmer": stemmer,
            "method": "lucene",
            "tokenizer": _WORD.pattern,
        }
        tokenize = DocTokenizer({"": 0}, stopword_set(stopwords), make_stemmer(stemmer))  # fail fast on bad names
        if start_build(out, "bm25", corpus, settings):
            manifest = IndexManifest.load(out)
            if manifest.corpus_sha256 == corpus_hash(corpus):
                return manifest
            IndexManifest("bm25", str(corpus), "", 0, settings, complete=False).save(out)  # another corpus: redo
        num_docs, sha = build_bm25_folder(
            corpus, out, BM25_SUBDIR, tokenize, k1, b, memory_budget_mb, chunk_size, show_progress
        )
        manifest = IndexManifest("bm25", str(corpus), sha, num_docs, settings)
        manifest.save(out)
        return manifest

    def _search_batch(self, queries: list[str], topk: int) -> list[Hits]:
        ids = [tokenize_query(q, self.vocab, self._stopwords, self._stem) for q in queries]
        lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter((t for c in ids for t in c), dtype=np.int64, count=int(lens.sum()))
        cum = np.concatenate([[0], np.cumsum(self._postings[flat])])  # postings of the terms, running total
        ends = np.cumsum(lens)
        costs = cum[ends] - cum[ends - lens]  # (B,) postings per query
        alone = costs >= self.prune_min_postings if self.prune_min_postings is not None else costs < 0
        small = np.flatnonzero(~alone)
        tasks = [(small[a:z].tolist(), False) for a, z in plan_sub_batches(costs[small], self.sub_batch_postings)]
        big = np.flatnonzero(alone).tolist()
        tasks += [(big[a : a + 8], True) for a in range(0, len(big), 8)]  # 8 pruned queries a task
        if len(tasks) > 1 and self.search_threads > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.search_threads, thread_name_prefix="bm25")
            parts = list(self._pool.map(lambda t: self._run(ids, t[0], t[1], topk), tasks))
        else:
            parts = [self._run(ids, rows, prune, topk) for rows, prune in tasks]
        out: list[Hits] = [None] * len(ids)  # type: ignore[list-item]
        for (rows, _), hits in zip(tasks, parts):
            for r, h in zip(rows, hits):
                out[r] = h
        return out

    def _run(self, ids: list[list[int]], rows: list[int], prune: bool, topk: int) -> list[Hits]:
        """Hits of the queries ``rows``: one sparse product, or (``prune``) MaxScore one query at a time."""
        if not prune:
            return self._score([ids[r] for r in rows], topk)
        out = []
        for r in rows:
            row = maxscore_row(self._terms_by_doc, self.term_max, ids[r], topk)
            out.append(topk_per_row(row, topk)[0] if row is not None else self._score([ids[r]], topk)[0])
        return out

    @property
    def term_max(self) -> np.ndarray:
        """``(V,)`` max score of each term: ``bm25/term_max.npy`` of the index, else computed once here."""
        if self._term_max is None:
            path = self._index_dir / TERM_MAX_FILE
            self._term_max = np.load(path) if path.is_file() else term_max_scores(self._terms_by_doc)
        return self._term_max

    def _score(self, ids: list[list[int]], topk: int) -> list[Hits]:
        """Top-k of one sub-batch of tokenised queries: one sparse product, then per-row top-k."""
        q = query_matrix(ids, self._terms_by_doc.shape[0]).T  # (b, V)
        return topk_per_row(q @ self._terms_by_doc, topk)  # (b, V) @ (V, N): CSR (b, N), no conversion
