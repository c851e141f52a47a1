"""Per-call retrieval metrics on the client and the server: latency p50/p99, failures, queries per second, cache and
de-duplication hit rate; the server's in the Prometheus text format (``GET /metrics``, via ``prometheus_client``).

:class:`CallWindow` keeps the latencies of the last calls (a bounded window) and running counts; the client side is
:class:`~searchr1.retrieval.search_log.SearchRecorder` (``metrics()``; a training run logs them per step as
``retrieval/*``), the server side :func:`server_registry`, a registry per app with a request-latency histogram,
request counters by status and gauges read at scrape time (window p50/p99 and qps, the retriever's counters).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``q`` percent of ``values`` at or below it
    (NaN for no values)."""
    if not 0 < q <= 100:
        raise ValueError(f"q must be in (0, 100], got {q}")
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


@dataclass(frozen=True)
class CallStats:
    """A snapshot of a :class:`CallWindow`.

    Attributes:
        calls: calls since the start (or the last reset).
        queries: queries in those calls.
        failures: calls that failed.
        latency_p50, latency_p99: seconds, over the calls in the window (NaN without calls).
        qps: queries per second over the window (first call's start to now).
    """

    calls: int
    queries: int
    failures: int
    latency_p50: float
    latency_p99: float
    qps: float


class CallWindow:
    """Thread-safe latencies of the last ``size`` calls plus running counts.

    Args:
        size: calls kept for the percentiles and the rate.
        clock: seconds (``time.perf_counter``; a test passes its own).
    """

    def __init__(self, size: int = 4096, clock: Callable[[], float] = time.perf_counter) -> None:
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        self.clock = clock
        self._recent: deque[tuple[float, float, int]] = deque(maxlen=size)  # (start, seconds, queries)
        self._lock = threading.Lock()
        self.calls = self.queries = self.failures = 0

    def add(self, seconds: float, queries: int, failed: bool = False, end: float | None = None) -> None:
        """Record one call that ended after ``seconds``, at ``end`` on :attr:`clock` (None: just now)."""
        now = self.clock() if end is None else end
        with self._lock:
            self._recent.append((now - seconds, seconds, queries))
            self.calls += 1
            self.queries += queries
            self.failures += int(failed)

    def stats(self) -> CallStats:
        with self._lock:
            recent = list(self._recent)
            calls, queries, failures = self.calls, self.queries, self.failures
        latencies = [s for _, s, _ in recent]
        span = self.clock() - recent[0][0] if recent else 0.0
        qps = sum(n for *_, n in recent) / span if span > 0 else math.nan
        return CallStats(calls, queries, failures, percentile(latencies, 50), percentile(latencies, 99), qps)

    def reset(self) -> None:
        with self._lock:
            self._recent.clear()
            self.calls = self.queries = self.failures = 0


def cache_hit_rate(metrics: dict[str, float]) -> float:
    """Share of queries answered without the backend (in-batch repeats + LRU hits) from a ``CachedRetriever``'s
    ``metrics()`` (NaN without queries or counters)."""
    queries = metrics.get("queries", 0.0)
    return metrics["cache_hits"] / queries if queries and "cache_hits" in metrics else math.nan


def client_metrics(window: CallWindow, retriever: Any) -> dict[str, float]:
    """``latency_p50_ms``, ``latency_p99_ms``, ``qps``, ``calls``, ``queries``, ``failures`` and the wrapped
    retriever's ``cache_hit_rate``."""
    s = window.stats()
    inner = retriever.metrics() if hasattr(retriever, "metrics") else {}
    return {
        "calls": float(s.calls),
        "queries": float(s.queries),
        "failures": float(s.failures),
        "latency_p50_ms": s.latency_p50 * 1000,
        "latency_p99_ms": s.latency_p99 * 1000,
        "qps": s.qps,
        "cache_hit_rate": cache_hit_rate(inner),
    }


class _ScrapeCollector:
    """Gauges computed at scrape time from the request window, the batcher and the retriever."""

    def __init__(self, window: CallWindow, retriever: Any, batcher: Any) -> None:
        self.window, self.retriever, self.batcher = window, retriever, batcher

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.window.stats()
        yield GaugeMetricFamily(
            "searchr1_retrieve_latency_p50_seconds", "Median /retrieve latency over the recent window", s.latency_p50
        )
        yield GaugeMetricFamily(
            "searchr1_retrieve_latency_p99_seconds", "99th percentile /retrieve latency, recent window", s.latency_p99
        )
        yield GaugeMetricFamily("searchr1_retrieve_qps", "Queries per second over the recent window", s.qps)
        yield CounterMetricFamily("searchr1_retrieve_failures", "Requests answered with a 5xx", s.failures)
        yield CounterMetricFamily("searchr1_retrieve_queries", "Queries received in /retrieve requests", s.queries)
        yield CounterMetricFamily("searchr1_batcher_batches", "Micro-batches searched", self.batcher.batches)
        yield CounterMetricFamily("searchr1_batcher_search_calls", "Retriever calls made", self.batcher.search_calls)
        inner = self.retriever.metrics() if hasattr(self.retriever, "metrics") else {}
        rate = cache_hit_rate(inner)
        yield GaugeMetricFamily(
            "searchr1_retriever_cache_hit_ratio", "Queries answered by de-duplication or the LRU cache", rate
        )
        for key in ("queries", "unique_queries", "cache_hits", "backend_calls", "search_seconds"):
            if key in inner:
                yield CounterMetricFamily(f"searchr1_retriever_{key}", f"Retriever counter {key}", inner[key])


def server_registry(window: CallWindow, retriever: Any, batcher: Any):
    """A ``prometheus_client`` registry for one server app; returns ``(registry, observe, flush)``.

    ``observe(seconds, queries, status)`` records one ``/retrieve`` request. It runs on the event loop for every
    request, so it only appends to a list: the request-latency histogram, the status counters and ``window`` take
    the pending records in ``flush()``, which the ``/metrics`` handler calls before each scrape (and ``observe``
    itself every 1,024 records, which bounds the list). Each record keeps its end time, so the window's rate is
    the same as if it had been added at once.
    """
    from prometheus_client import CollectorRegistry, Counter, Histogram

    registry = CollectorRegistry(auto_describe=False)
    latency = Histogram(
        "searchr1_retrieve_request_seconds",
        "Time to answer a /retrieve request",
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        registry=registry,
    )
    requests = Counter("searchr1_retrieve_requests", "Answered /retrieve requests", ["status"], registry=registry)
    registry.register(_ScrapeCollector(window, retriever, batcher))
    pending: list[tuple[float, float, int, int]] = []  # (end, seconds, queries, status)
    clock = window.clock

    def flush() -> None:
        records = pending[:]
        del pending[: len(records)]
        for end, seconds, queries, status in records:
            latency.observe(seconds)
            requests.labels(str(status)).inc()
            window.add(seconds, queries, failed=status >= 500, end=end)

    def observe(seconds: float, queries: int, status: int) -> None:
        pending.append((clock(), seconds, queries, status))
        if len(pending) >= 1024:
            flush()

    return registry, observe, flush
