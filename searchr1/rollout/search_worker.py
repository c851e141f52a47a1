"""Retrieval off the decode path: searches run on a worker thread while the backend keeps decoding other rows.

The rollout engine hands each moment's searches (the rows that ended a turn at one decoding step) to
:class:`SearchWorker` and answers ``PENDING`` for those rows; the backend parks them and polls between its
steps. The worker makes one retriever call per moment; when it is still busy with an earlier call, the
moments queued meanwhile go out together in its next call (the retriever scores each query on its own, so
the grouping changes no result). Results are applied to the trajectories on the caller's thread, so the
trajectory code is the synchronous path's, token for token.

Reproducibility: the ids of a trajectory depend on its own sampling stream (vLLM: per-request seeds; HF:
per-row generators) and on the retriever's answer to its own queries, not on when its observation comes
back. What varies with latency is the order rows re-enter the batch, hence the batch composition at each
step; that changes floating-point reduction order in attention, so a near-tie sample can in rare cases differ
between runs with different latencies. Call grouping and timings are not reproducible.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class SearchJob:
    """One moment's searches: ``keys`` identify the rows (caller's choice), ``queries`` in the same order."""

    keys: list[Any]
    queries: list[str]
    results: list[Any] | None = None
    error: BaseException | None = None
    seconds: float = 0.0


class SearchWorker:
    """One background thread calling ``search(queries) -> one result per query``; merges queued jobs per call.

    Args:
        search: the retrieval function (runs on the worker thread; exceptions are handed back with the job).
    """

    def __init__(self, search: Callable[[list[str]], list[Any]]) -> None:
        self._search = search
        self._todo: queue.Queue[SearchJob | None] = queue.Queue()
        self._done: queue.Queue[SearchJob] = queue.Queue()
        self.outstanding = 0
        self.calls = 0
        self.busy_seconds = 0.0
        self._thread = threading.Thread(target=self._serve, name="searchr1-search", daemon=True)
        self._thread.start()

    def submit(self, keys: list[Any], queries: list[str]) -> None:
        """Queue one moment's searches."""
        self.outstanding += 1
        self._todo.put(SearchJob(list(keys), list(queries)))

    def ready(self, block: bool) -> list[SearchJob]:
        """Finished jobs (at least one when ``block`` and any is outstanding), in completion order."""
        jobs = []
        if block and self.outstanding:
            jobs.append(self._done.get())
        while True:
            try:
                jobs.append(self._done.get_nowait())
            except queue.Empty:
                break
        self.outstanding -= len(jobs)
        return jobs

    def close(self) -> None:
        """Stop the thread once its current call returns (jobs still queued are dropped)."""
        self._todo.put(None)
        self._thread.join(timeout=60)

    def _serve(self) -> None:
        while True:
            first = self._todo.get()
            if first is None:
                return
            jobs, stop = [first], False
            while True:  # everything queued while the previous call ran goes out in this call
                try:
                    nxt = self._todo.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                jobs.append(nxt)
            self._run(jobs)
            if stop:
                return

    def _run(self, jobs: list[SearchJob]) -> None:
        queries = [q for job in jobs for q in job.queries]
        start = time.perf_counter()
        try:
            results = self._search(queries)
            if len(results) != len(queries):
                raise RuntimeError(f"retriever returned {len(results)} result lists for {len(queries)} queries")
            error = None
        except BaseException as err:  # handed to the caller's thread, raised there
            results, error = None, err
        seconds = time.perf_counter() - start
        self.calls += 1
        self.busy_seconds += seconds
        offset = 0
        for job in jobs:
            job.error, job.seconds = error, seconds
            if results is not None:
                job.results = results[offset : offset + len(job.queries)]
            offset += len(job.queries)
            self._done.put(job)
