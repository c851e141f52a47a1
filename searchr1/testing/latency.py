"""A retriever wrapper that adds a fixed wall-clock latency to every call (a remote server's round trip)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from searchr1.retrieval import Passage, Retriever


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


class StragglerRetriever:
    """``retriever`` with a heavy-tailed per-query latency: each query waits a log-normal draw (median ``median_s``,
    shape ``sigma``), and a call returns when its slowest query is done (a batch waits for its straggler).

    With ``median_s=0.05`` and ``sigma=1.3`` the p99 is ``0.05·e^{2.326·1.3}`` ≈ 1.03 s (the async benchmark's
    workload). Draws come from one seeded generator in call order.

    Args:
        retriever: the real search engine.
        median_s: median per-query latency in seconds.
        sigma: log-normal shape (σ of the log-latency).
        seed: seed of the latency draws.
    """

    def __init__(self, retriever: Retriever, median_s: float = 0.05, sigma: float = 1.3, seed: int = 0) -> None:
        import random
        import threading

        self.retriever, self.median_s, self.sigma = retriever, median_s, sigma
        self._random, self._lock = random.Random(seed), threading.Lock()
        self.latencies: list[float] = []

    def draw(self) -> float:
        """One per-query latency (seconds)."""
        import math

        with self._lock:
            latency = self.median_s * math.exp(self.sigma * self._random.gauss(0.0, 1.0))
            self.latencies.append(latency)
        return latency

    def search(self, queries: list[str], topk: int) -> list[list[Passage]]:
        start = time.perf_counter()
        wait = max((self.draw() for _ in queries), default=0.0)
        results = self.retriever.search(queries, topk)
        time.sleep(max(wait - (time.perf_counter() - start), 0.0))
        return results


def latency_quantiles(latencies: Sequence[float]) -> dict[str, float]:
    """Median, p90, p99 and max of ``latencies`` in seconds (the distribution a benchmark prints)."""
    ordered = sorted(latencies)
    if not ordered:
        return {}

    def q(p: float) -> float:
        return ordered[min(int(p * len(ordered)), len(ordered) - 1)]

    return {"count": len(ordered), "p50_s": q(0.5), "p90_s": q(0.9), "p99_s": q(0.99), "max_s": ordered[-1]}
