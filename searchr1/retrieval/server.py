"""FastAPI retrieval server, wire-compatible with Search-R1's ``search_r1/search/retrieval_server.py``.

``POST /retrieve`` takes ``{"queries": [str], "topk": int | null, "return_scores": bool}`` and answers
``{"result": [[{"document": {"id", "contents"}, "score": float}, ...] per query]}``; with
``return_scores: false`` the items are ``{"document": ...}`` without ``score`` (Search-R1 returns bare
documents there and its own client always asks for scores). ``GET /health`` reports the index size and
counters.

Departures from Search-R1: requests from many clients are micro-batched (:class:`MicroBatcher`: an
asyncio queue, a few-ms window, a cap on queries per batch) into one retriever call that runs in a worker
thread, so the event loop keeps answering; and every malformed request gets a 4xx with a message instead
of a 500 (bad JSON 400, oversized body or too many queries 413, invalid fields 422).
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from searchr1.retrieval.types import Passage, Retriever


@dataclass
class ServerLimits:
    """Request limits; anything beyond them is refused with a 4xx.

    Attributes:
        max_queries: queries per request (more: 413).
        max_query_chars: characters per query (more: 422).
        max_topk: largest ``topk`` (more: 422).
        default_topk: ``topk`` when the request gives null or omits it.
        max_body_bytes: request body size (more: 413).
    """

    max_queries: int = 1024
    max_query_chars: int = 4096
    max_topk: int = 100
    default_topk: int = 3
    max_body_bytes: int = 4 * 1024 * 1024


class BadRequest(Exception):
    """A client error with its HTTP status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Pending:
    queries: list[str]
    topk: int
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Merges concurrent requests into one ``retriever.search`` call run in a worker thread.

    Args:
        retriever: the backend.
        max_batch_queries: stop collecting once a batch holds this many queries.
        window_ms: how long to wait for more requests after the first one of a batch.
    """

    def __init__(self, retriever: Retriever, max_batch_queries: int = 512, window_ms: float = 1.0) -> None:
        self.retriever = retriever
        self.max_batch_queries = max_batch_queries
        self.window_s = window_ms / 1000.0
        self.requests = 0
        self.batches = 0
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="retrieval")

    async def search(self, queries: list[str], topk: int) -> list[list[Passage]]:
        """Queue one request and wait for its share of a batched search."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:  # first call, or a new event loop
            self._loop, self._queue = loop, asyncio.Queue()
            self._task = loop.create_task(self._run())
        future = loop.create_future()
        assert self._queue is not None
        await self._queue.put(_Pending(queries, topk, future))
        return await future

    async def _collect(self) -> list[_Pending]:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        size = len(batch[0].queries)
        deadline = loop.time() + self.window_s
        while size < self.max_batch_queries:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            batch.append(item)
            size += len(item.queries)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            queries = [q for item in batch for q in item.queries]
            topk = max(item.topk for item in batch)
            self.requests += len(batch)
            self.batches += 1
            try:
                results = await loop.run_in_executor(self._executor, self.retriever.search, queries, topk)
            except Exception as err:  # noqa: BLE001 - handed to every waiting request
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(err)
                continue
            start = 0
            for item in batch:
                if not item.future.done():
                    item.future.set_result([r[: item.topk] for r in results[start : start + len(item.queries)]])
                start += len(item.queries)

    async def close(self) -> None:
        """Stop the batching task and the worker thread."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)


def parse_request(body: bytes, limits: ServerLimits) -> tuple[list[str], int, bool]:
    """Validate a ``/retrieve`` body into ``(queries, topk, return_scores)`` or raise :class:`BadRequest`."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadRequest(400, f"request body is not valid JSON: {err}") from None
    if not isinstance(payload, dict):
        raise BadRequest(422, 'request body must be a JSON object like {"queries": ["..."], "topk": 3}')
    queries = payload.get("queries")
    if not isinstance(queries, list):
        raise BadRequest(422, "'queries' is required and must be a list of strings")
    if len(queries) > limits.max_queries:
        raise BadRequest(413, f"{len(queries)} queries in one request; the limit is {limits.max_queries}, split it")
    for i, q in enumerate(queries):
        if not isinstance(q, str):
            raise BadRequest(422, f"queries[{i}] must be a string, got {type(q).__name__}")
        if not q.strip():
            raise BadRequest(422, f"queries[{i}] is empty")
        if len(q) > limits.max_query_chars:
            raise BadRequest(422, f"queries[{i}] has {len(q)} characters; the limit is {limits.max_query_chars}")
        try:
            q.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest(422, f"queries[{i}] is not valid unicode (lone surrogate)") from None
    topk = payload.get("topk")
    if topk is None:
        topk = limits.default_topk
    if not isinstance(topk, int) or isinstance(topk, bool) or not 1 <= topk <= limits.max_topk:
        raise BadRequest(422, f"'topk' must be an integer from 1 to {limits.max_topk} (or null), got {topk!r}")
    return_scores = payload.get("return_scores", False)
    if not isinstance(return_scores, bool):
        raise BadRequest(422, f"'return_scores' must be true or false, got {return_scores!r}")
    return queries, topk, return_scores


async def _read_body(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BadRequest(413, f"request body of {declared} bytes exceeds the limit of {max_bytes}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BadRequest(413, f"request body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _document(p: Passage, with_score: bool) -> dict[str, Any]:
    item: dict[str, Any] = {"document": {"id": p.id, "contents": p.contents}}
    if with_score:
        item["score"] = p.score
    return item


def create_app(
    retriever: Retriever,
    limits: ServerLimits | None = None,
    max_batch_queries: int = 512,
    batch_window_ms: float = 1.0,
) -> FastAPI:
    """Build the FastAPI app serving ``retriever``.

    Args:
        retriever: any :class:`Retriever` (BM25, dense, even an ``HTTPRetriever`` as a proxy).
        limits: request limits (defaults: :class:`ServerLimits`).
        max_batch_queries: queries merged into one retriever call at most.
        batch_window_ms: how long a batch waits for more requests.
    """
    limits = limits or ServerLimits()
    batcher = MicroBatcher(retriever, max_batch_queries=max_batch_queries, window_ms=batch_window_ms)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await batcher.close()

    app = FastAPI(title="searchr1 retrieval", lifespan=lifespan)
    app.state.batcher = batcher
    app.state.retriever = retriever

    @app.post("/retrieve")
    async def retrieve(request: Request) -> JSONResponse:
        try:
            queries, topk, return_scores = parse_request(await _read_body(request, limits.max_body_bytes), limits)
        except BadRequest as err:
            return JSONResponse({"detail": err.message}, status_code=err.status)
        if not queries:
            return JSONResponse({"result": []})
        try:
            results = await batcher.search(queries, topk)
        except Exception as err:  # noqa: BLE001 - a backend failure is the server's fault, say so
            return JSONResponse({"detail": f"search backend failed: {type(err).__name__}: {err}"}, status_code=503)
        return JSONResponse({"result": [[_document(p, return_scores) for p in r] for r in results]})

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
            "metrics": metrics,
        }

    return app
