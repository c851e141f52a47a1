"""Shared retriever front: input checks, per-batch de-duplication, an optional LRU cache and metrics.

GRPO samples ``n`` responses per prompt and they often issue the same query, so a rollout batch repeats
queries many times. :class:`CachedRetriever` sends each distinct query to the backend once per call
(``dedup=True``, the default) and can keep an LRU cache across calls (``cache_size > 0``). Backends only
implement ``_search_batch`` over distinct queries; every retriever (BM25, dense, HTTP) inherits this.
Repeats of a query get the *same* result list object (no copies), so a repeat costs one dict lookup.

:class:`StoreRetriever` is the base of the retrievers that read passages from a
:class:`~searchr1.retrieval.corpus.DocStore`: their backend returns :class:`~searchr1.retrieval.types.Hits`
(store rows + scores), de-duplicated and cached as such, and ``search`` reads each distinct result's
passages once. ``search_hits`` gives the rows themselves (the server answers from the stored lines).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from searchr1.retrieval.types import Hits, Passage

if TYPE_CHECKING:
    from searchr1.retrieval.corpus import DocStore


@dataclass
class RetrievalStats:
    """Counters of one retriever since construction (or the last ``reset_metrics``).

    Attributes:
        calls: ``search`` calls.
        queries: queries received (with repeats).
        unique_queries: queries sent to the backend.
        cache_hits: queries answered without the backend (repeats in a batch + LRU hits).
        backend_calls: batched backend calls made.
        search_seconds: wall seconds spent inside the backend.
    """

    calls: int = 0
    queries: int = 0
    unique_queries: int = 0
    cache_hits: int = 0
    backend_calls: int = 0
    search_seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        """The counters as a flat dict (for loggers)."""
        return {k: float(v) for k, v in asdict(self).items()}


class CachedRetriever(ABC):
    """Base class implementing :class:`~searchr1.retrieval.types.Retriever` on top of ``_search_batch``.

    Args:
        dedup: send each distinct query of a call to the backend once.
        cache_size: keep this many ``(query, topk)`` results across calls (0 disables the cache).
    """

    def __init__(self, dedup: bool = True, cache_size: int = 0) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.dedup = dedup
        self.cache_size = cache_size
        self.stats = RetrievalStats()
        self._cache: OrderedDict[tuple[str, int], Any] = OrderedDict()  # one backend result per (query, topk)
        self._lock = threading.Lock()

    @abstractmethod
    def _search_batch(self, queries: list[str], topk: int) -> list[Any]:
        """Backend search over ``queries`` (already validated, possibly distinct): one result per query
        (a passage list, or :class:`Hits` for a :class:`StoreRetriever`)."""

    def search(self, queries: list[str], topk: int) -> list[list[Passage]]:
        """Return up to ``topk`` passages per query, best first, in query order.

        Args:
            queries: the batch (repeats allowed; a repeat gets the same list object as its first).
            topk: passages per query, >= 1.
        """
        return self._search_deduped(queries, topk)

    def _search_deduped(self, queries: list[str], topk: int) -> list[Any]:
        """Backend results for ``queries`` with de-duplication, the LRU cache and the counters."""
        if not isinstance(topk, int) or isinstance(topk, bool) or topk < 1:
            raise ValueError(f"topk must be a positive int, got {topk!r}")
        if not isinstance(queries, list | tuple) or not all(isinstance(q, str) for q in queries):
            raise TypeError("queries must be a list of strings")
        queries = list(queries)
        with self._lock:
            self.stats.calls += 1
            self.stats.queries += len(queries)
        if not queries:
            return []
        if not self.dedup and self.cache_size == 0:
            return self._timed(queries, topk)
        distinct = list(dict.fromkeys(queries))  # order-preserving
        found: dict[str, Any] = {}
        if self.cache_size:
            for q in distinct:
                hit = self._cache_get(q, topk)
                if hit is not None:
                    found[q] = hit
        if not self.dedup:  # cache only: misses keep their repeats
            return self._fill_without_dedup(queries, found, [q for q in queries if q not in found], topk)
        todo = [q for q in distinct if q not in found] if found else distinct
        if todo:
            results = self._timed(todo, topk)
            found.update(zip(todo, results))
            if self.cache_size:
                for q, res in zip(todo, results):
                    self._cache_put(q, topk, res)
        with self._lock:
            self.stats.cache_hits += len(queries) - len(todo)
        return [found[q] for q in queries]

    def _fill_without_dedup(
        self, queries: list[str], found: dict[str, Any], missing: list[str], topk: int
    ) -> list[Any]:
        results = iter(self._timed(missing, topk) if missing else [])
        out = []
        for q in queries:
            if q in found:
                out.append(found[q])
            else:
                res = next(results)
                self._cache_put(q, topk, res)
                out.append(res)
        with self._lock:
            self.stats.cache_hits += len(queries) - len(missing)
        return out

    def _timed(self, queries: list[str], topk: int) -> list[Any]:
        start = time.perf_counter()
        results = self._search_batch(queries, topk)
        with self._lock:
            self.stats.search_seconds += time.perf_counter() - start
            self.stats.backend_calls += 1
            self.stats.unique_queries += len(queries)
        if len(results) != len(queries):
            raise RuntimeError(f"backend returned {len(results)} result lists for {len(queries)} queries")
        return results

    def _cache_get(self, query: str, topk: int) -> Any:
        if self.cache_size == 0:
            return None
        with self._lock:
            res = self._cache.get((query, topk))
            if res is not None:
                self._cache.move_to_end((query, topk))
            return res

    def _cache_put(self, query: str, topk: int, result: Any) -> None:
        if self.cache_size == 0:
            return
        with self._lock:
            self._cache[(query, topk)] = result
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def metrics(self) -> dict[str, float]:
        """Counters as a dict: calls, queries, unique_queries, cache_hits, backend_calls, search_seconds."""
        with self._lock:
            return self.stats.as_dict()

    def reset_metrics(self) -> None:
        """Zero the counters (the cache is kept)."""
        with self._lock:
            self.stats = RetrievalStats()


class StoreRetriever(CachedRetriever):
    """A :class:`CachedRetriever` whose backend returns :class:`Hits` (rows of ``self.docs``).

    Subclasses set ``self.docs`` and implement ``_search_batch`` returning one :class:`Hits` per query.
    """

    docs: DocStore

    @abstractmethod
    def _search_batch(self, queries: list[str], topk: int) -> list[Hits]:
        """Backend search over distinct ``queries``: one :class:`Hits` per query, best first."""

    def search_hits(self, queries: list[str], topk: int) -> list[Hits]:
        """Like :meth:`search` but returns store rows and scores instead of passages (repeats share one object)."""
        return self._search_deduped(queries, topk)

    def search(self, queries: list[str], topk: int) -> list[list[Passage]]:
        """Return up to ``topk`` passages per query, best first, in query order.

        Each distinct result's passages are read from the store once; repeats of a query get the same list.

        Args:
            queries: the batch (repeats allowed).
            topk: passages per query, >= 1.
        """
        hits = self._search_deduped(queries, topk)
        distinct = list({id(h): h for h in hits}.values())  # repeats of a query share one Hits object
        flat = self.docs.passages([r for h in distinct for r in h.rows], [s for h in distinct for s in h.scores])
        read: dict[int, list[Passage]] = {}
        start = 0
        for h in distinct:  # one store read for the whole batch, then split per query
            read[id(h)] = flat[start : start + len(h.rows)]
            start += len(h.rows)
        return [read[id(h)] for h in hits]

    def __len__(self) -> int:
        return len(self.docs)
