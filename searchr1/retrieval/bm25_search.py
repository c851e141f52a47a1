"""Exact per-query BM25 top-k with MaxScore pruning (Turtle & Flood 1995), over the ``(V, N)`` CSR term rows.

A query whose posting lists are long (common words on a big corpus) would touch every posting in the exhaustive
sparse product. MaxScore scores the query's rarest terms first: after each term, ``theta`` (the k-th best partial
score so far) is a lower bound of the final k-th score, and a passage that holds none of the terms scored so far
can reach at most ``sum(max score of each remaining term)``. Once that bound is below ``theta`` no such passage can
enter the top k, so the remaining (common) terms are only looked up for the candidates whose partial score plus
the bound reaches ``theta`` (binary search in their doc-sorted posting lists), instead of being scanned.

The candidates' final scores are then summed term by term in term-id order in float32, the order and precision of
scipy's sparse product, and ranked by :func:`~searchr1.retrieval.bm25.topk_per_row`: results equal the exhaustive
path's exactly (a test checks it, ties included).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def term_max_scores(terms_by_doc: sp.csr_matrix) -> np.ndarray:
    """``(V,)`` float32 max score of each term's posting list (0 for a term without postings)."""
    indptr = np.asarray(terms_by_doc.indptr)
    out = np.zeros(terms_by_doc.shape[0], dtype=np.float32)
    nonempty = np.flatnonzero(np.diff(indptr) > 0)
    if len(nonempty):
        out[nonempty] = np.maximum.reduceat(np.asarray(terms_by_doc.data), indptr[nonempty])
    return out


def _lookup(docs: np.ndarray, vals: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Scores of a doc-sorted posting list at the sorted ``cand`` docs (0 where absent): ``(C,)`` float32."""
    pos = np.minimum(np.searchsorted(docs, cand), len(docs) - 1)
    return np.where(docs[pos] == cand, vals[pos], np.float32(0.0))


def _merge(a: np.ndarray, wa: np.ndarray, b: np.ndarray, wb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union of two sorted doc arrays with their weights summed: ``(C,), (C,)``. Timsort merges the two sorted
    runs in linear time (``np.unique`` would sort them from scratch)."""
    docs, w = np.concatenate([a, b]), np.concatenate([wa, wb])
    perm = np.argsort(docs, kind="stable")
    docs, w = docs[perm], w[perm]
    first = np.empty(len(docs), dtype=bool)
    first[:1], first[1:] = True, docs[1:] != docs[:-1]
    return docs[first], np.bincount(np.cumsum(first) - 1, w, int(first.sum()))


def _kth(partial: np.ndarray, k: int) -> float:
    """A lower bound of the final k-th best score: the k-th best partial score, less float32 rounding room."""
    if len(partial) < k:
        return 0.0
    return float(np.partition(partial, len(partial) - k)[len(partial) - k]) * (1 - 1e-5)


def _slack(x: float) -> float:
    """``x`` raised by float32 rounding room (partials are float64 sums, final scores float32 sums)."""
    return x * (1 + 1e-5) + 1e-6


def maxscore_row(
    terms_by_doc: sp.csr_matrix, term_max: np.ndarray, term_ids: list[int], k: int, give_up: float = 0.25
) -> sp.csr_matrix | None:
    """The ``(1, N)`` score row of one query restricted to the passages that can be in its top ``k``.

    Every passage of the exact top ``k`` (and every one tied with the k-th) is in the row with its exact score,
    so :func:`~searchr1.retrieval.bm25.topk_per_row` of it equals that of the full row ``q @ S^T``.

    Args:
        terms_by_doc: ``(V, N)`` CSR, row ``t`` = term ``t``'s postings, docs ascending.
        term_max: ``(V,)`` from :func:`term_max_scores`.
        term_ids: the query's token ids (repeats count, as in the product).
        k: top k.
        give_up: fraction of the query's postings scored without reaching the bound after which pruning stops.

    Returns:
        the row, or None when pruning gave up (every term common: the exhaustive product is cheaper).
    """
    indptr, indices, data = terms_by_doc.indptr, terms_by_doc.indices, terms_by_doc.data
    uniq, counts = np.unique(np.asarray(term_ids, dtype=np.int64), return_counts=True)  # term-id order
    weights = counts.astype(np.float32)
    postings = [(indices[indptr[t] : indptr[t + 1]], data[indptr[t] : indptr[t + 1]]) for t in uniq.tolist()]
    lens = np.array([len(d) for d, _ in postings])
    order = np.argsort(lens, kind="stable")  # rarest first
    bound = np.concatenate([np.cumsum((weights * term_max[uniq])[order][::-1])[::-1], [0.0]])  # (m + 1,)
    cand, partial, scored, e = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64), 0, len(order)
    for j, i in enumerate(order.tolist()):  # score the rarest terms until the others cannot matter
        if scored > give_up * lens.sum():
            return None
        docs, vals = postings[i]
        scored += len(docs)
        cand, partial = _merge(cand, partial, docs, weights[i] * vals.astype(np.float64))
        if len(cand) >= k and _slack(bound[j + 1]) < _kth(partial, k):
            e = j + 1
            break
    for j in range(e, len(order) + 1):  # look the other terms up for the candidates that can still reach theta
        keep = partial + _slack(bound[j]) >= _kth(partial, k)
        cand, partial = cand[keep], partial[keep]
        if j < len(order):
            docs, vals = postings[order[j]]
            partial = partial + weights[order[j]] * _lookup(docs, vals, cand).astype(np.float64)
    total = np.zeros(len(cand), dtype=np.float32)
    for (docs, vals), w in zip(postings, weights):  # term-id order, float32: scipy's product arithmetic
        total += w * _lookup(docs, vals, cand)
    keep = total != 0
    return sp.csr_matrix(
        (total[keep], cand[keep].astype(np.int32), np.array([0, int(keep.sum())])), shape=(1, terms_by_doc.shape[1])
    )
