"""FastAPI retrieval server, wire-compatible with Search-R1's ``search_r1/search/retrieval_server.py``.

``POST /retrieve`` takes ``{"queries": [str], "topk": int | null, "return_scores": bool}`` and answers
``{"result": [[{"document": {"id", "contents"}, "score": float}, ...] per query]}``; with
``return_scores: false`` the items are ``{"document": ...}`` without ``score`` (Search-R1 returns bare
documents there and its own client always asks for scores). ``GET /health`` reports the index size and
counters; ``GET /metrics`` request latency (histogram, p50/p99), qps, failures and the cache hit rate in the
Prometheus text format (:mod:`~searchr1.retrieval.call_metrics`).

Departures from Search-R1: requests from many clients are micro-batched
(:class:`~searchr1.retrieval.batcher.MicroBatcher`: an asyncio queue, a cap on queries per batch, a batch
searched in parts of whole requests, each part answered when done) into few retriever calls that run in a worker
thread, so the event loop keeps answering; a big request (up to 16,384 queries) is fed to the batcher in slices;
an empty query gets an empty result list and an over-long one is cut (Search-R1 searches both as they are); and
every malformed request gets a 4xx with a message instead of a 500 (bad JSON 400, oversized body or too many
queries 413, invalid fields 422). Like Search-R1, ``topk`` 0 or null means the server default.

Speed: a store-backed retriever (BM25, dense) is asked for :class:`~searchr1.retrieval.types.Hits` (rows and
scores) and the answer splices each row's stored JSON line into one ``orjson`` call (:func:`encode_hits`), so
the server never builds, parses or re-encodes a passage; other retrievers' passages are encoded with
``orjson`` in one call (:func:`encode_results`, byte-identical to ``JSONResponse``'s ``json.dumps``).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

from searchr1.retrieval.base import StoreRetriever
from searchr1.retrieval.batcher import MicroBatcher
from searchr1.retrieval.call_metrics import CallWindow, server_registry
from searchr1.retrieval.corpus import DocStore
from searchr1.retrieval.memory import TRIM_AFTER_BYTES, release_free_memory
from searchr1.retrieval.search_cache import BudgetExhausted
from searchr1.retrieval.types import Hits, Passage, Retriever


@dataclass
class ServerLimits:
    """Request limits. A malformed request is refused with a 4xx; one bad *query* never fails its request.

    Attributes:
        max_queries: queries per request (more: 413). Sized for a whole GRPO step in one POST (Search-R1's
            client sends all searches of a turn at once: 512 prompts x 5 samples = 2,560, and more at scale).
        max_query_chars: a longer query is cut to this many characters and searched (a degenerate generated
            query must not fail the other queries of the batch).
        max_topk: largest ``topk`` (more: 422).
        default_topk: ``topk`` when the request gives 0, null or omits it (Search-R1: a falsy topk is the default).
        max_body_bytes: request body size (more: 413).
        max_results: passages in one answer, queries x topk (more: 413 saying how many queries a part may hold):
            bounds the answer's size and the server's memory (16,384 queries x topk 100 would be a 1.2 GB answer).
    """

    max_queries: int = 16_384
    max_query_chars: int = 4096
    max_topk: int = 100
    default_topk: int = 3
    max_body_bytes: int = 32 * 1024 * 1024
    max_results: int = 65_536


class BadRequest(Exception):
    """A client error with its HTTP status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json_loads(body: bytes) -> Any:
    """``json.loads`` with its errors as :class:`BadRequest` 400."""
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadRequest(400, f"request body is not valid JSON: {err}") from None
    except RecursionError:  # json.loads on e.g. 100k nested '[' (was a 500)
        raise BadRequest(400, "request body is JSON nested too deeply") from None


def _searchable(query: str, max_chars: int) -> str:
    """``query`` cut to ``max_chars`` characters, lone surrogates replaced by ``?`` (it is searched either way)."""
    query = query[:max_chars]
    try:
        query.encode("utf-8")
    except UnicodeEncodeError:
        query = query.encode("utf-8", "replace").decode("utf-8")
    return query


def parse_request(body: bytes, limits: ServerLimits) -> tuple[list[str], int, bool]:
    """Validate a ``/retrieve`` body into ``(queries, topk, return_scores)`` or raise :class:`BadRequest`.

    Queries are returned cut to ``max_query_chars`` and with lone surrogates replaced; empty ones are kept (their
    answer is an empty list). This runs on the event loop for every request: the common case (``orjson`` parsed
    the body, so no string holds a lone surrogate, and no query is too long) leaves the list as it is.
    """
    try:
        payload = orjson.loads(body)
        valid_utf8 = True  # orjson refuses lone surrogates, escaped or not
    except orjson.JSONDecodeError:  # bad JSON, or what only json takes ("\\ud800" escapes, ...): json decides
        payload = _json_loads(body)
        valid_utf8 = False
    if not isinstance(payload, dict):
        raise BadRequest(422, 'request body must be a JSON object like {"queries": ["..."], "topk": 3}')
    queries = payload.get("queries")
    if not isinstance(queries, list):
        raise BadRequest(422, "'queries' is required and must be a list of strings")
    if len(queries) > limits.max_queries:
        raise BadRequest(413, f"{len(queries)} queries in one request; the limit is {limits.max_queries}, split it")
    if not all(map(isinstance, queries, repeat(str))):
        i, q = next((i, q) for i, q in enumerate(queries) if not isinstance(q, str))
        raise BadRequest(422, f"queries[{i}] must be a string, got {type(q).__name__}")
    if not valid_utf8 or max(map(len, queries), default=0) > limits.max_query_chars:
        queries = [_searchable(q, limits.max_query_chars) for q in queries]
    topk = payload.get("topk")
    if topk is None or topk == 0:  # Search-R1's server: `if not request.topk: request.topk = default`
        topk = limits.default_topk
    if not isinstance(topk, int) or isinstance(topk, bool) or not 1 <= topk <= limits.max_topk:
        raise BadRequest(
            422, f"'topk' must be an integer from 1 to {limits.max_topk} (or 0/null for the default), got {topk!r}"
        )
    if len(queries) * topk > limits.max_results:
        per_part = max(1, limits.max_results // topk)
        raise BadRequest(
            413,
            f"{len(queries)} queries x topk {topk} = {len(queries) * topk} passages in one answer; the limit is "
            f"{limits.max_results}: split the request into parts of at most {per_part} queries (or ask a smaller topk)",
        )
    return_scores = payload.get("return_scores", False)
    if not isinstance(return_scores, bool):
        raise BadRequest(422, f"'return_scores' must be true or false, got {return_scores!r}")
    return queries, topk, return_scores


async def _receive_body(scope: Scope, receive: Receive, max_bytes: int) -> bytes | None:
    """The request body (``None`` if the client disconnected); :class:`BadRequest` 413 past ``max_bytes``."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > max_bytes:
            raise BadRequest(413, f"request body of {value.decode()} bytes exceeds the limit of {max_bytes}")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise BadRequest(413, f"request body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _json(obj: Any) -> bytes:
    """What ``JSONResponse`` writes for ``obj``."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


async def answer_retrieve(
    body: bytes, limits: ServerLimits, batcher: MicroBatcher, docs: DocStore | None
) -> tuple[int, bytes]:
    """``(status, JSON body)`` of the ``/retrieve`` answer to a request body."""
    status, content, _ = await answer_counted(body, limits, batcher, docs)
    return status, content


async def answer_counted(
    body: bytes, limits: ServerLimits, batcher: MicroBatcher, docs: DocStore | None
) -> tuple[int, bytes, int]:
    """:func:`answer_retrieve` plus the number of queries of the request (0 for a refused one)."""
    try:
        queries, topk, return_scores = parse_request(body, limits)
    except BadRequest as err:
        return err.status, _json({"detail": err.message}), 0
    if not queries:
        return 200, b'{"result":[]}', 0
    try:
        results = await search_streamed(batcher, queries, topk, Hits([], []) if docs is not None else [])
        if docs is not None:
            return 200, encode_hits(results, docs, return_scores), len(queries)  # type: ignore[arg-type]
        return 200, encode_results(results, return_scores), len(queries)  # type: ignore[arg-type]
    except BudgetExhausted as err:  # a paid engine's max_cost: 402, which clients raise as BudgetExhausted (no retry)
        return 402, _json({"detail": str(err)}), len(queries)
    except Exception as err:  # noqa: BLE001 - a backend failure is the server's fault, say so
        return 503, _json({"detail": f"search backend failed: {type(err).__name__}: {err}"}), len(queries)


async def search_streamed(
    batcher: MicroBatcher, queries: list[str], topk: int, empty: list[Passage] | Hits
) -> list[list[Passage]] | list[Hits]:
    """Results of one request's queries, in order: empty (whitespace-only) queries get ``empty`` without a search,
    the others go to the batcher in slices of ``part_queries``, so a big request is searched and merged with other
    requests like many small ones (no single search call of 16k queries). A request of one slice without an empty
    query (the common case) goes to the batcher as it is: no task or list per request on the event loop."""
    if len(queries) <= batcher.part_queries and all(map(str.strip, queries)):
        return await batcher.search(queries, topk)
    keep = [i for i, q in enumerate(queries) if q.strip()]
    step = batcher.part_queries
    slices = [[queries[i] for i in keep[lo : lo + step]] for lo in range(0, len(keep), step)]
    parts = await asyncio.gather(*(batcher.search(part, topk) for part in slices))
    results: list[Any] = [empty] * len(queries)
    for i, found in zip(keep, (r for part in parts for r in part)):
        results[i] = found
    return results


class RetrievalApp(FastAPI):
    """The FastAPI app, with ``POST /retrieve`` answered straight from ASGI.

    The hot path skips FastAPI's per-request stack (telemetry middleware, routing, ``Request``/``Response``
    objects), a large share of a request's CPU time: same status, body and headers as the FastAPI route,
    which stays registered for the OpenAPI docs and for apps mounted under a prefix. Everything else
    (``/health``, 404/405, docs, lifespan) goes through FastAPI.
    """

    retrieve_handler: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.retrieve_handler
        hot = scope["type"] == "http" and scope["path"] == "/retrieve" and scope["method"] == "POST"
        if hot and handler is not None and not scope.get("root_path"):  # mounted under a prefix: FastAPI routes it
            await handler(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _document(p: Passage, with_score: bool) -> dict[str, Any]:
    item: dict[str, Any] = {"document": {"id": p.id, "contents": p.contents}}
    if with_score:
        score = p.score
        if not math.isfinite(score):
            raise ValueError(f"passage {p.id!r} has a non-finite score {score!r}")
        item["score"] = score
    return item


def encode_results(results: list[list[Passage]], with_scores: bool) -> bytes:
    """The ``/retrieve`` answer body ``{"result": [[{"document": {"id", "contents"}, "score"}, ...], ...]}``.

    Same bytes as ``json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()`` (what
    ``JSONResponse`` wrote) for string ids and ordinary scores; ``orjson`` spells a few extreme floats
    differently (``1e-5`` for ``1e-05``), the same numbers. Raises ``ValueError`` for a NaN/inf score
    (``json`` refused those too) and ``TypeError`` for values JSON cannot hold.
    """
    try:
        return orjson.dumps({"result": [[_document(p, with_scores) for p in r] for r in results]})
    except orjson.JSONEncodeError as err:  # e.g. a lone surrogate in a passage
        raise TypeError(f"cannot encode the search results as JSON: {err}") from None


def encode_hits(hits: list[Hits], docs: DocStore, with_scores: bool) -> bytes:
    """The ``/retrieve`` answer body for store rows, with the stored passage lines spliced in verbatim.

    Each ``document`` is the stored JSON object of its row (``{"id": ..., "contents": ...}``, written by
    ``json.dumps`` when the index was built), embedded as an ``orjson.Fragment``: no passage is parsed or
    re-encoded. The body parses to the same value as :func:`encode_results` of the same passages (only
    whitespace inside ``document`` differs). Raises ``ValueError`` for a NaN/inf score (orjson would write
    ``null``).
    """
    lines = iter(docs.lines([r for h in hits for r in h.rows]))
    frag = orjson.Fragment
    if not with_scores:
        return orjson.dumps({"result": [[{"document": frag(next(lines))} for _ in h.rows] for h in hits]})
    if not all(map(math.isfinite, [s for h in hits for s in h.scores])):
        raise ValueError("the index returned a non-finite score")
    return orjson.dumps({"result": [[{"document": frag(next(lines)), "score": s} for s in h.scores] for h in hits]})


def create_app(
    retriever: Retriever,
    limits: ServerLimits | None = None,
    max_batch_queries: int = 512,
    batch_window_ms: float = 1.0,
    part_queries: int = 256,
) -> FastAPI:
    """Build the FastAPI app serving ``retriever``.

    Args:
        retriever: any :class:`Retriever` (BM25, dense, even an ``HTTPRetriever`` as a proxy).
        limits: request limits (defaults: :class:`ServerLimits`).
        max_batch_queries: queries merged into one retriever call at most.
        batch_window_ms: how long a batch waits for more requests.
        part_queries: search a big batch in parts of whole requests of at least this many queries, answering
            each part as soon as it is done (see :class:`MicroBatcher`).
    """
    limits = limits or ServerLimits()
    batcher = MicroBatcher(retriever, max_batch_queries, window_ms=batch_window_ms, part_queries=part_queries)
    docs = retriever.docs if isinstance(retriever, StoreRetriever) else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await batcher.close()

    app = RetrievalApp(title="searchr1 retrieval", lifespan=lifespan)
    app.state.batcher = batcher
    app.state.retriever = retriever
    app.state.calls = CallWindow()
    registry, observe, flush_metrics = server_registry(app.state.calls, retriever, batcher)

    async def read_and_answer(scope: Scope, receive: Receive) -> tuple[int, bytes] | None:
        start = time.perf_counter()
        try:
            body = await _receive_body(scope, receive, limits.max_body_bytes)
        except BadRequest as err:
            observe(time.perf_counter() - start, 0, err.status)
            return err.status, _json({"detail": err.message})
        if body is None:
            return None
        status, content, queries = await answer_counted(body, limits, batcher, docs)
        observe(time.perf_counter() - start, queries, status)
        return status, content

    async def retrieve_asgi(scope: Scope, receive: Receive, send: Send) -> None:
        answer = await read_and_answer(scope, receive)
        if answer is None:  # the client went away
            return
        status, content = answer
        headers = [(b"content-length", str(len(content)).encode()), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})
        if len(content) >= TRIM_AFTER_BYTES:  # RSS back near its baseline once the answer's buffers are freed
            del answer, content
            asyncio.get_running_loop().call_later(0.05, release_free_memory)

    app.retrieve_handler = retrieve_asgi

    @app.post("/retrieve")
    async def retrieve(request: Request) -> Response:
        answer = await read_and_answer(request.scope, request.receive)
        status, content = answer if answer is not None else (400, _json({"detail": "client disconnected"}))
        return Response(content, status_code=status, media_type="application/json")

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text format: request latency histogram and window p50/p99, qps, failures, cache hit rate."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        flush_metrics()
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        metrics = retriever.metrics() if hasattr(retriever, "metrics") else {}
        size = len(retriever) if hasattr(retriever, "__len__") else None
        return {
            "status": "ok",
            "retriever": type(retriever).__name__,
            "num_docs": size,
            "requests": batcher.requests,
            "batches": batcher.batches,
            "search_calls": batcher.search_calls,
            "metrics": metrics,
        }

    return app
