"""Cross-encoder reranking over any retriever's top-n, as Search-R1's ``retrieval_rerank_server.py``.

:class:`RerankRetriever` asks the wrapped retriever for ``depth`` passages per query (Search-R1: 10), scores every
``(query, passage)`` pair of the batch with a ``sentence-transformers`` ``CrossEncoder`` in one batched
``predict`` (``batch_size`` pairs per forward), and returns each query's ``topk`` best (Search-R1: 3). A passage
is shown to the cross-encoder as Search-R1's ``_passage_to_string`` writes it, ``(Title: <title>) <text>``.
Departure: Search-R1's ``rerank`` pairs every query with the passages of *every* query of the request (its loop
runs over all document lists); here each query is scored against its own passages only.

Search-R1's default model is ``cross-encoder/ms-marco-MiniLM-L12-v2``; its weights are not available on machines
without the Hugging Face hub, so the tests use a tiny randomly initialised cross-encoder built offline
(:func:`~searchr1.retrieval.tiny.make_tiny_cross_encoder`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from searchr1.retrieval.base import CachedRetriever
from searchr1.retrieval.types import Passage, Retriever

DEFAULT_RERANKER = "cross-encoder/ms-marco-MiniLM-L12-v2"


def rerank_text(p: Passage) -> str:
    """A passage as the cross-encoder reads it (Search-R1's ``_passage_to_string``)."""
    return f"(Title: {p.title_line}) {p.text}"


def top_by_score(passages: list[Passage], scores: list[float], k: int) -> list[Passage]:
    """The ``k`` passages of highest score, best first (ties keep the retriever's order), with those scores."""
    order = sorted(range(len(passages)), key=lambda i: -scores[i])[:k]
    return [dataclasses.replace(passages[i], score=float(scores[i])) for i in order]


class RerankRetriever(CachedRetriever):
    """A retriever whose results are reranked by a cross-encoder.

    Args:
        retriever: the first stage (any :class:`~searchr1.retrieval.types.Retriever`: BM25, dense, HTTP, online).
        model: a ``CrossEncoder`` model name or local folder (a sequence-classification model with one label).
        depth: passages asked of ``retriever`` per query (at least ``topk``).
        batch_size: pairs per cross-encoder forward.
        max_length: tokens per pair (query + passage; None: the tokenizer's ``model_max_length``).
        device: ``cpu``, ``cuda``, ... (None: sentence-transformers picks).
        dedup, cache_size: see :class:`~searchr1.retrieval.base.CachedRetriever`.
    """

    def __init__(
        self,
        retriever: Retriever,
        model: str = DEFAULT_RERANKER,
        depth: int = 10,
        batch_size: int = 32,
        max_length: int | None = None,
        device: str | None = None,
        dedup: bool = True,
        cache_size: int = 0,
    ) -> None:
        super().__init__(dedup=dedup, cache_size=cache_size)
        if depth < 1 or batch_size < 1:
            raise ValueError(f"need depth >= 1 and batch_size >= 1, got depth={depth}, batch_size={batch_size}")
        from sentence_transformers import CrossEncoder

        self.retriever, self.depth, self.batch_size = retriever, depth, batch_size
        self.model_name = model
        self.cross_encoder = CrossEncoder(model, max_length=max_length, device=device)

    def __repr__(self) -> str:
        return f"RerankRetriever({self.retriever!r}, model={self.model_name!r}, depth={self.depth})"

    def score(self, pairs: list[tuple[str, str]]) -> list[float]:
        """Cross-encoder scores of ``(query, passage text)`` pairs, in batches of ``batch_size``."""
        if not pairs:
            return []
        scores = self.cross_encoder.predict(pairs, batch_size=self.batch_size, show_progress_bar=False)
        return [float(s) for s in scores]

    def _search_batch(self, queries: list[str], topk: int) -> list[list[Passage]]:
        candidates = self.retriever.search(queries, max(self.depth, topk))
        pairs = [(q, rerank_text(p)) for q, found in zip(queries, candidates) for p in found]
        scores = iter(self.score(pairs))  # one batched predict for the whole call
        return [top_by_score(found, [next(scores) for _ in found], topk) for found in candidates]

    def spend(self) -> Any:
        """The wrapped retriever's spend (None when it is free)."""
        from searchr1.retrieval.online import search_spend

        return search_spend(self.retriever)

    def metrics(self) -> dict[str, float]:
        """This stage's counters plus the wrapped retriever's, prefixed ``inner_``."""
        inner = self.retriever.metrics() if hasattr(self.retriever, "metrics") else {}
        return {**super().metrics(), **{f"inner_{k}": v for k, v in inner.items()}}
