"""Hybrid retrieval: reciprocal-rank fusion (RRF) of several store-backed retrievers over the same corpus.

``score(d) = sum_r 1 / (rrf_k + rank_r(d))`` over the retrievers ``r`` whose top ``depth`` hold passage ``d``
(ranks from 1; Cormack et al. 2009). RRF needs no score calibration between BM25 and inner products, only ranks.
The default ``rrf_k = 10`` departs from the paper's 60: a smaller constant weighs the top ranks more, which on
the HotpotQA sample lifted recall@5 above both inputs where 60 fell between them (docs/retrieval.md has the
sweep; it was chosen on that 53-question sample, so treat it as a starting point for a large corpus).

Every retriever must index the same corpus in the same order (its index folder's manifest records the corpus
hash; a mismatch is refused), so a passage-store row names the same passage in each.
"""

from __future__ import annotations

from searchr1.retrieval.base import StoreRetriever
from searchr1.retrieval.types import Hits


def reciprocal_rank_fusion(rankings: list[list[int]], rrf_k: float, topk: int) -> Hits:
    """Fuse best-first row lists into the ``topk`` rows of highest RRF score (ties: lower row first).

    Args:
        rankings: per retriever, its rows best first.
        rrf_k: the RRF constant (larger flattens the rank discount).
        topk: rows to return.
    """
    fused: dict[int, float] = {}
    for rows in rankings:
        for rank, row in enumerate(rows, start=1):
            fused[row] = fused.get(row, 0.0) + 1.0 / (rrf_k + rank)
    best = sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:topk]
    return Hits([r for r, _ in best], [s for _, s in best])


class HybridRetriever(StoreRetriever):
    """RRF of several retrievers (e.g. BM25 + dense) that index the same corpus.

    Args:
        retrievers: the retrievers to fuse (each a BM25/dense retriever; their own dedup/cache still apply).
        rrf_k: RRF constant.
        depth: rows asked of each retriever per query (at least ``topk``).
        dedup, cache_size: see :class:`~searchr1.retrieval.base.CachedRetriever`.

    Raises:
        ValueError: fewer than two retrievers, or retrievers over different corpora.
    """

    def __init__(
        self,
        retrievers: list[StoreRetriever],
        rrf_k: float = 10.0,
        depth: int = 100,
        dedup: bool = True,
        cache_size: int = 0,
    ) -> None:
        super().__init__(dedup=dedup, cache_size=cache_size)
        if len(retrievers) < 2:
            raise ValueError(f"HybridRetriever fuses at least two retrievers, got {len(retrievers)}")
        if rrf_k <= 0 or depth < 1:
            raise ValueError(f"need rrf_k > 0 and depth >= 1, got rrf_k={rrf_k}, depth={depth}")
        hashes = {getattr(getattr(r, "manifest", None), "corpus_sha256", None) for r in retrievers}
        sizes = {len(r) for r in retrievers}
        if len(sizes) > 1 or (None not in hashes and len(hashes) > 1):
            raise ValueError(
                f"HybridRetriever needs retrievers over the same corpus; got {sorted(sizes)} passages and corpus "
                f"hashes {sorted(h[:12] for h in hashes if h)}. Build every index from the same corpus file"
            )
        self.retrievers, self.rrf_k, self.depth = list(retrievers), rrf_k, depth
        self.docs = retrievers[0].docs

    def _search_batch(self, queries: list[str], topk: int) -> list[Hits]:
        depth = max(self.depth, topk)
        per = [r.search_hits(queries, depth) for r in self.retrievers]  # (R,) lists of (B,) Hits
        return [reciprocal_rank_fusion([p[i].rows for p in per], self.rrf_k, topk) for i in range(len(queries))]
