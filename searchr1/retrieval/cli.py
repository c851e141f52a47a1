"""``searchr1 index build`` and ``searchr1 serve`` (argument parsing and startup checks only: the library
functions are in :mod:`searchr1.retrieval.indexes` and :mod:`searchr1.retrieval.server`). The older console
scripts ``searchr1-index`` and ``searchr1-retrieval serve`` are aliases.

Examples::

    searchr1 index build --corpus wiki-18.jsonl.gz --retriever bm25 --out indexes/wiki18-bm25
    searchr1 index build --corpus wiki-18.jsonl.gz --retriever dense --encoder intfloat/e5-base-v2 \\
        --faiss Flat --out indexes/wiki18-e5
    searchr1 serve --index indexes/wiki18-bm25 --host 127.0.0.1 --port 8000
    searchr1 serve --index indexes/wiki18-bm25 --index indexes/wiki18-e5   # hybrid (RRF) of both
    SERPER_API_KEY=... searchr1 serve --engine serper --price-per-query 0.001 --max-cost 5
    searchr1 serve --index indexes/wiki18-bm25 --rerank cross-encoder/ms-marco-MiniLM-L12-v2

A failed build removes the ``--out`` folder it created (a Ctrl-C or a kill keeps it: the build resumes there).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

from searchr1.errors import ShortArgumentParser, UserError
from searchr1.retrieval.indexes import INDEX_KINDS, BuildOptions, OpenOptions, build_index, open_indexes
from searchr1.retrieval.serve_options import add_online_arguments, retriever_from_args

_BUILD = BuildOptions()  # the flags' defaults


def _index_parser() -> argparse.ArgumentParser:
    parser = ShortArgumentParser(prog="searchr1 index", description="Build retrieval indexes.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="index a wiki-18 style corpus (.jsonl / .jsonl.gz)")
    b.add_argument("--corpus", required=True, help="JSONL corpus, lines {'id': str, 'contents': '\"Title\"\\ntext'}")
    b.add_argument("--retriever", required=True, choices=INDEX_KINDS.names())
    b.add_argument("--out", required=True, help="index folder to write (a killed build resumes in it)")
    b.add_argument("--k1", type=float, default=_BUILD.k1, help="BM25 k1 (pyserini default)")
    b.add_argument("--b", type=float, default=_BUILD.b, help="BM25 b (pyserini default)")
    b.add_argument("--stopwords", default=_BUILD.stopwords, help="BM25 stopword list: en, en_plus, none")
    b.add_argument(
        "--stemmer",
        default=_BUILD.stemmer,
        help="BM25 stemmer: porter (pyserini's), none, or another PyStemmer algorithm",
    )
    b.add_argument(
        "--memory-budget-mb",
        type=float,
        default=_BUILD.memory_budget_mb,
        help="BM25: RAM for the build's buffers (the vocabulary comes on top); a killed build resumes",
    )
    b.add_argument("--encoder", default=_BUILD.encoder, help="dense: HF model name or local folder")
    b.add_argument(
        "--preset",
        default=_BUILD.preset,
        help="dense: e5 (mean, query:/passage: prefixes), bge (cls), minilm (mean, no prefixes)",
    )
    b.add_argument("--pooling", default=None, help="dense: mean or cls (default: the preset's)")
    b.add_argument("--max-length", type=int, default=_BUILD.max_length, help="dense: tokens per passage")
    b.add_argument("--batch-size", type=int, default=_BUILD.batch_size, help="dense: passages per forward pass")
    b.add_argument("--device", default=None, help="dense: cuda or cpu (default: cuda if available)")
    b.add_argument(
        "--faiss", default=_BUILD.faiss, help="dense: faiss index_factory string (Flat, HNSW64, IVF4096,PQ64)"
    )
    b.add_argument("--shard-size", type=int, default=_BUILD.shard_size, help="dense: passages per embedding shard")
    b.add_argument("--train-size", type=int, default=_BUILD.train_size, help="dense: vectors used to train IVF/PQ")
    return parser


def index_main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``searchr1-index``."""
    args = _index_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not Path(args.corpus).is_file():
        raise UserError(f"--corpus {args.corpus}: no such file; give a .jsonl or .jsonl.gz corpus (one JSON per line)")
    options = BuildOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(BuildOptions)})
    out = Path(args.out)
    fresh = not out.exists()
    try:
        manifest = build_index(args.retriever, args.corpus, args.out, options)
    except Exception:  # not on Ctrl-C: a killed or interrupted build resumes in its folder
        if fresh:  # a rerun must not meet the half-built folder of a failed one
            shutil.rmtree(out, ignore_errors=True)
        raise
    print(f"built {manifest.kind} index of {manifest.num_docs} passages in {args.out}")


def _serve_parser() -> argparse.ArgumentParser:
    parser = ShortArgumentParser(prog="searchr1", description="Serve an index over HTTP.")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve POST /retrieve (Search-R1 wire format) and GET /health")
    s.add_argument(
        "--index",
        action="append",
        help="index folder from searchr1 index build; give it twice or more to serve their hybrid (RRF) fusion",
    )
    add_online_arguments(s)  # --engine (a paid web search engine instead of --index), --rerank
    s.add_argument("--rrf-k", type=float, default=10.0, help="hybrid: reciprocal-rank-fusion constant")
    s.add_argument("--mmap", action="store_true", help="dense: memory-map faiss.index (IO_FLAG_MMAP)")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    s.add_argument("--port", type=int, default=8000, help="TCP port, 1-65535 (default 8000)")
    s.add_argument("--topk", type=int, default=3, help="topk when a request gives none or 0 (default 3)")
    s.add_argument("--max-topk", type=int, default=100, help="largest topk a request may ask (default 100)")
    s.add_argument("--max-queries", type=int, default=16_384, help="queries per request (more: 413; default 16384)")
    s.add_argument(
        "--max-results",
        type=int,
        default=65_536,
        help="passages per answer, queries x topk (more: 413 saying how to split; bounds memory; default 65536)",
    )
    s.add_argument("--max-query-chars", type=int, default=4096, help="longer queries are cut (default 4096)")
    s.add_argument("--max-batch-queries", type=int, default=512, help="queries merged into one batch (default 512)")
    s.add_argument(
        "--part-queries",
        type=int,
        default=256,
        help="search a batch in parts of whole requests of at least this many queries, each answered when done",
    )
    s.add_argument("--batch-window-ms", type=float, default=1.0, help="micro-batching window")
    s.add_argument("--cache-size", type=int, default=0, help="LRU results kept across batches")
    s.add_argument("--no-dedup", action="store_true", help="do not merge identical queries of a batch")
    s.add_argument("--device", default=None, help="dense: query encoder device")
    s.add_argument("--use-gpu", action="store_true", help="dense: faiss on GPU (needs faiss-gpu)")
    s.add_argument("--nprobe", type=int, default=None, help="dense IVF: cells probed")
    s.add_argument("--ef-search", type=int, default=None, help="dense HNSW: search breadth")
    s.add_argument("--log-level", default="warning", help="uvicorn log level")
    return parser


def serve_main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``searchr1-retrieval``."""
    import uvicorn

    from searchr1.retrieval.server import ServerLimits, create_app

    args = _serve_parser().parse_args(argv)
    check_serve_args(args)
    options = OpenOptions(
        dedup=not args.no_dedup,
        cache_size=args.cache_size,
        device=args.device,
        use_gpu=args.use_gpu,
        nprobe=args.nprobe,
        ef_search=args.ef_search,
        mmap=args.mmap,
    )
    retriever = retriever_from_args(args, lambda: open_indexes(args.index, args.rrf_k, options))
    check_topk_fits(args.topk, retriever)
    limits = ServerLimits(
        max_queries=args.max_queries,
        max_query_chars=args.max_query_chars,
        max_topk=args.max_topk,
        default_topk=args.topk,
        max_results=args.max_results,
    )
    app = create_app(retriever, limits, args.max_batch_queries, args.batch_window_ms, args.part_queries)
    size = f" ({len(retriever)} passages)" if hasattr(retriever, "__len__") else ""
    print(f"serving {type(retriever).__name__}{size} on http://{args.host}:{args.port}", flush=True)
    gc.collect()
    gc.freeze()  # the index, app and imports are permanent: later collections skip them (no full-heap pauses)
    # no X-Forwarded-For rewriting (the app never reads client addresses) and no "server" header: less work per
    # request for nothing the app uses
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        proxy_headers=False,
        server_header=False,
    )


def check_serve_args(args: argparse.Namespace) -> None:
    """Refuse, before the index is opened, options the server could not honour (:class:`UserError`, every one)."""
    problems = []
    if not 1 <= args.port <= 65535:
        problems.append(f"--port {args.port} is not a TCP port: use 1-65535 (e.g. 8000)")
    positive = ("max_topk", "max_queries", "max_results", "max_query_chars", "max_batch_queries", "part_queries")
    for name in ("topk", *positive):
        if getattr(args, name) < 1:
            problems.append(f"--{name.replace('_', '-')} {getattr(args, name)} must be 1 or more")
    if args.topk > args.max_topk:
        problems.append(f"--topk {args.topk} is above --max-topk {args.max_topk}: lower it or raise --max-topk")
    if args.topk > args.max_results:
        problems.append(f"--topk {args.topk} is above --max-results {args.max_results}")
    for name in ("batch_window_ms", "cache_size"):
        if getattr(args, name) < 0:
            problems.append(f"--{name.replace('_', '-')} {getattr(args, name)} must be 0 or more")
    if problems:
        raise UserError("; ".join(problems))


def check_topk_fits(topk: int, retriever: object) -> None:
    """Refuse a default ``--topk`` above the served index's passage count (an online engine has no count)."""
    inner = getattr(retriever, "retriever", None)  # a reranker: the index under it holds the passages
    sized = next((r for r in (retriever, inner) if hasattr(r, "__len__")), None)
    count = len(sized) if sized is not None else None  # type: ignore[arg-type]
    if count is not None and topk > count:
        raise UserError(f"--topk {topk} is above the index's {count} passages: give --topk {count} or less")
