"""The ``searchr1 serve`` options of paid web search (``--engine``) and reranking (``--rerank``).

``--engine serpapi|serper|google_cse`` serves an :class:`~searchr1.retrieval.online.OnlineRetriever` instead of an
index folder (the key from the environment variable ``--api-key-env``, the engine's default name when omitted);
``--rerank MODEL`` wraps whatever is served in a :class:`~searchr1.retrieval.rerank.RerankRetriever`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from searchr1.errors import UserError
from searchr1.retrieval.base import CachedRetriever
from searchr1.retrieval.online import DEFAULT_CACHE_DIR


def add_online_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``--engine`` and ``--rerank`` option groups to the ``serve`` parser."""
    from searchr1.retrieval.engines import ONLINE_ENGINES

    web = parser.add_argument_group("paid web search (instead of --index)")
    web.add_argument("--engine", choices=ONLINE_ENGINES.names(), help="serve a web search engine")
    web.add_argument("--base-url", default=None, help="engine endpoint (default: the engine's public one)")
    web.add_argument("--api-key-env", default=None, help="environment variable holding the API key")
    web.add_argument("--cx", default="", help="google_cse: the Programmable Search Engine id")
    web.add_argument("--price-per-query", type=float, default=0.0, help="cost of one answered request")
    web.add_argument("--max-cost", type=float, default=None, help="refuse requests past this spend (per scope)")
    web.add_argument("--budget-scope", default="default", help="ledger name max-cost applies to")
    web.add_argument("--search-cache-dir", default=DEFAULT_CACHE_DIR, help="results cache and spend ledger folder")
    web.add_argument("--requests-per-second", type=float, default=5.0, help="request starts per second")
    web.add_argument("--fetch-pages", action="store_true", help="passage text from the result's page, trimmed")
    web.add_argument("--page-chars", type=int, default=1000, help="characters kept from a page")
    rr = parser.add_argument_group("reranking")
    rr.add_argument("--rerank", default=None, metavar="MODEL", help="cross-encoder name or folder to rerank with")
    rr.add_argument("--rerank-depth", type=int, default=10, help="passages fetched per query before reranking")
    rr.add_argument("--rerank-batch-size", type=int, default=32, help="pairs per cross-encoder forward")


def online_from_args(args: argparse.Namespace) -> CachedRetriever:
    """The :class:`~searchr1.retrieval.online.OnlineRetriever` the ``--engine`` options describe."""
    from searchr1.retrieval.engines import ONLINE_ENGINES

    kwargs = dict(
        base_url=args.base_url,
        price_per_query=args.price_per_query,
        max_cost=args.max_cost,
        budget_scope=args.budget_scope,
        cache_dir=args.search_cache_dir,
        requests_per_second=args.requests_per_second,
        fetch_pages=args.fetch_pages,
        page_chars=args.page_chars,
        cache_size=args.cache_size,
    )
    if args.api_key_env:
        kwargs["api_key_env"] = args.api_key_env
    if args.engine == "google_cse":
        kwargs["cx"] = args.cx
    return ONLINE_ENGINES.get(args.engine)(**kwargs)


def retriever_from_args(args: argparse.Namespace, open_index: Callable[[], CachedRetriever]) -> CachedRetriever:
    """What ``serve`` serves: the engine or the index folder(s), reranked when ``--rerank`` is given."""
    if bool(args.engine) == bool(args.index):
        raise UserError("serve: give either --index DIR (one or more) or --engine NAME")
    retriever = online_from_args(args) if args.engine else open_index()
    if args.rerank:
        from searchr1.retrieval.rerank import RerankRetriever

        device = getattr(args, "device", None)
        retriever = RerankRetriever(
            retriever, args.rerank, depth=args.rerank_depth, batch_size=args.rerank_batch_size, device=device
        )
    return retriever
