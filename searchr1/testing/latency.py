"""A retriever wrapper that adds a fixed wall-clock latency to every call (a remote server's round trip)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from searchr1.retrieval import Retriever


class DelayedRetriever:
    """``retriever`` answering every ``search`` call ``latency_s`` seconds later (results unchanged).

    Args:
        retriever: the real search engine.
        latency_s: seconds added to each call, whatever its number of queries.
    """

    def __init__(self, retriever: Retriever, latency_s: float) -> None:
        self.retriever, self.latency_s = retriever, latency_s
        self.calls = 0

    def search(self, queries: Sequence[str], topk: int = 3):
        self.calls += 1
        start = time.perf_counter()
        results = self.retriever.search(queries, topk)
        time.sleep(max(self.latency_s - (time.perf_counter() - start), 0.0))
        return results
