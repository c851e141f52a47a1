"""Retrieval: corpus readers, BM25/dense indexes, the HTTP server and client (see ``types`` for the API).

``BM25Retriever``/``DenseRetriever`` search in-process (from a built index folder, or a corpus indexed in
memory for demos); ``HTTPRetriever`` talks to ``searchr1-retrieval serve`` (wire-compatible with
Search-R1's ``retrieval_server.py``). All implement :class:`Retriever` and share de-duplication and
metrics through :class:`CachedRetriever`. ``SerpAPIRetriever``/``SerperRetriever``/``GoogleCSERetriever`` search the web
within a budget (:mod:`~searchr1.retrieval.online`); ``RerankRetriever`` reranks any of them with a cross-encoder.
Heavy modules (torch/faiss, fastapi, httpx) load lazily.
"""

from __future__ import annotations

from searchr1._lazy import lazy_exports
from searchr1.retrieval.base import CachedRetriever, RetrievalStats
from searchr1.retrieval.bm25 import BM25Retriever
from searchr1.retrieval.corpus import CorpusFormatError, iter_corpus
from searchr1.retrieval.manifest import IndexManifest, IndexMismatchError
from searchr1.retrieval.types import Passage, RetrievalError, Retriever, format_passages

_LAZY = {
    "DenseRetriever": "searchr1.retrieval.dense",
    "HTTPRetriever": "searchr1.retrieval.client",
    "HybridRetriever": "searchr1.retrieval.hybrid",
    "create_app": "searchr1.retrieval.server",
    "build_index": "searchr1.retrieval.indexes",
    "load_retriever": "searchr1.retrieval.indexes",
    "open_indexes": "searchr1.retrieval.indexes",
    "OnlineRetriever": "searchr1.retrieval.online",
    "SearchSpend": "searchr1.retrieval.online",
    "SerpAPIRetriever": "searchr1.retrieval.engines",
    "SerperRetriever": "searchr1.retrieval.engines",
    "GoogleCSERetriever": "searchr1.retrieval.engines",
    "ONLINE_ENGINES": "searchr1.retrieval.engines",
    "SearchCache": "searchr1.retrieval.search_cache",
    "BudgetExhausted": "searchr1.retrieval.search_cache",
    "RerankRetriever": "searchr1.retrieval.rerank",
    "ReplayRetriever": "searchr1.retrieval.search_log",
    "ReplayMissError": "searchr1.retrieval.search_log",
    "SearchLog": "searchr1.retrieval.search_log",
    "SearchRecorder": "searchr1.retrieval.search_log",
    "read_search_log": "searchr1.retrieval.search_log",
}

__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "BM25Retriever",
    "CachedRetriever",
    "CorpusFormatError",
    "IndexManifest",
    "IndexMismatchError",
    "Passage",
    "RetrievalError",
    "RetrievalStats",
    "Retriever",
    "format_passages",
    "iter_corpus",
    *_LAZY,
]
