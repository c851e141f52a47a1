"""Micro-batching of concurrent ``/retrieve`` requests into few search calls (see :class:`MicroBatcher`)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from searchr1.retrieval.base import StoreRetriever
from searchr1.retrieval.types import Hits, Passage, Retriever


@dataclass
class _Pending:
    queries: list[str]
    topk: int
    future: asyncio.Future = field(repr=False)


def _head(result: list[Passage] | Hits, k: int) -> list[Passage] | Hits:
    """The first ``k`` entries of one query's result (the object itself when it has no more)."""
    if isinstance(result, Hits):
        return result if len(result.rows) <= k else Hits(result.rows[:k], result.scores[:k])
    return result if len(result) <= k else result[:k]


class MicroBatcher:
    """Merges concurrent requests into one search call run in a worker thread.

    A :class:`~searchr1.retrieval.base.StoreRetriever` is asked for :class:`Hits` (``search_hits``: store
    rows, no passages built), any other retriever for passages (``search``).

    A big batch is searched in consecutive parts of whole requests, each of at least ``part_queries`` queries,
    and each part's requests are answered as soon as it is done: the event loop encodes and sends the first
    answers, and the clients parse them, while the worker searches the next part. (A client splitting a big
    batch into several concurrent requests, as :class:`~searchr1.retrieval.client.HTTPRetriever` does, gets the
    same overlap.)

    Args:
        retriever: the backend.
        max_batch_queries: stop collecting once a batch holds this many queries.
        window_ms: the longest a batch waits for more requests after its first one. It stops waiting as
            soon as two passes of the event loop bring no new request, so a lone request is not delayed;
            requests arriving while a search runs are merged into the next batch anyway.
        part_queries: the smallest part of a batch searched on its own (``max_batch_queries`` or more: one call
            per batch).
    """

    def __init__(
        self, retriever: Retriever, max_batch_queries: int = 512, window_ms: float = 1.0, part_queries: int = 256
    ) -> None:
        if max_batch_queries < 1 or part_queries < 1 or window_ms < 0:
            raise ValueError(
                f"need max_batch_queries >= 1, part_queries >= 1 and window_ms >= 0, got {max_batch_queries}, "
                f"{part_queries} and {window_ms}"
            )
        self.retriever = retriever
        self._search = retriever.search_hits if isinstance(retriever, StoreRetriever) else retriever.search
        self.max_batch_queries = max_batch_queries
        self.window_s = window_ms / 1000.0
        self.part_queries = part_queries
        self.requests = 0
        self.batches = 0
        self.search_calls = 0
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="retrieval")

    async def search(self, queries: list[str], topk: int) -> list[list[Passage]] | list[Hits]:
        """Queue one request and wait for its share of a batched search (:class:`Hits` from a store retriever)."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:  # first call, or a new event loop
            self._loop, self._queue = loop, asyncio.Queue()
            self._task = loop.create_task(self._run())
        future = loop.create_future()
        assert self._queue is not None
        self._queue.put_nowait(_Pending(queries, topk, future))  # unbounded: never waits
        return await future

    async def _collect(self) -> list[_Pending]:
        """The next batch. Requests that queued up during the previous search go at once: waiting for more
        would let the event loop first answer the whole previous batch (milliseconds for tens of requests) while
        the search thread sits idle. A request reaching an idle batcher waits up to two loop passes for company."""
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        queued = not self._queue.empty()
        batch = [await self._queue.get()]
        size = len(batch[0].queries)
        deadline = loop.time() + self.window_s
        idle_passes = 0
        while size < self.max_batch_queries:
            if self._queue.empty():
                if queued or idle_passes >= 2 or loop.time() >= deadline:
                    break
                await asyncio.sleep(0)  # one event-loop pass: lets requests already read reach the queue
                idle_passes = idle_passes + 1 if self._queue.empty() else 0
                continue
            item = self._queue.get_nowait()
            batch.append(item)
            size += len(item.queries)
        return batch

    def _parts(self, batch: list[_Pending]) -> list[list[_Pending]]:
        """``batch`` cut, in order, into runs of whole requests of at least ``part_queries`` queries each (the
        last run may be smaller; a remainder under half a part joins the run before it)."""
        parts: list[list[_Pending]] = [[]]
        size = 0
        for item in batch:
            if parts[-1] and size >= self.part_queries:
                parts.append([])
                size = 0
            parts[-1].append(item)
            size += len(item.queries)
        if len(parts) > 1 and 2 * size < self.part_queries:
            parts[-2].extend(parts.pop())
        return parts

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            self.requests += len(batch)
            self.batches += 1
            for part in self._parts(batch):
                await self._answer(part)

    async def _answer(self, part: list[_Pending]) -> None:
        """One search call for ``part``'s requests; each gets its share (or the search's exception)."""
        queries = [q for item in part for q in item.queries]
        topk = max(item.topk for item in part)
        self.search_calls += 1
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self._search, queries, topk)
        except Exception as err:  # noqa: BLE001 - handed to every waiting request
            for item in part:
                if not item.future.done():
                    item.future.set_exception(err)
            return
        start = 0
        for item in part:
            if not item.future.done():
                mine = results[start : start + len(item.queries)]
                item.future.set_result(mine if item.topk == topk else [_head(r, item.topk) for r in mine])
            start += len(item.queries)

    async def close(self) -> None:
        """Stop the batching task and the worker thread."""
        if self._task is not None:
            self._task.cancel()
            if self._loop is asyncio.get_running_loop():  # a task of another (test) loop cannot be awaited here
                await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)
