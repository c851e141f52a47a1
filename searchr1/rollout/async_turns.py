"""Continuous batching with retrieval off the decode path (the default with ``HFBackend`` and ``VLLMBackend``).

When rows end a turn, the engine appends the turn exactly as the synchronous path does; the rows that
searched are answered ``PENDING`` and their queries (one call per moment) go to a
:class:`~searchr1.rollout.search_worker.SearchWorker`. The backend keeps decoding the other rows and, between
its steps, polls for finished searches: their observations are appended on this thread and the rows re-enter
the batch. See :mod:`searchr1.rollout.search_worker` for what is reproducible when latency varies.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from searchr1.protocols import Action
from searchr1.retrieval import Retriever
from searchr1.rollout.backends.base import PENDING, Continuation, GenerationBackend, GenerationOutput, SamplingParams
from searchr1.rollout.config import RolloutConfig
from searchr1.rollout.search_worker import SearchWorker
from searchr1.rollout.types import Trajectory


class TurnEngine(Protocol):
    """What this loop uses of :class:`~searchr1.rollout.engine.RolloutEngine` (which calls it: a structural type
    here keeps the two modules out of an import cycle)."""

    config: RolloutConfig
    backend: GenerationBackend
    retriever: Retriever

    def _take_turn(self, traj: Trajectory, out: GenerationOutput, final: bool) -> Action | None: ...

    def _apply_searches(
        self, searches: list[tuple[Trajectory, str]], results: list[Any] | None, error: BaseException | None
    ) -> None: ...

    def _sampling_params(self, max_new_tokens: int, seed: int | None, turn: int) -> SamplingParams: ...


def run_continuous_async(engine: TurnEngine, trajs: list[Trajectory], seed: int | None) -> tuple[float, float]:
    """Roll out ``trajs`` on ``engine.backend.generate_multiturn(..., poll=...)`` with searches on a worker.

    Returns:
        generation seconds (wall time minus the time spent in the callbacks, including waits for a search when
        no row could decode) and retrieval seconds (retriever calls on the worker, overlapping decoding).
    """
    cfg = engine.config
    spent = {"callback": 0.0}

    def room(traj: Trajectory) -> int:
        return min(cfg.max_response_tokens, cfg.max_total_tokens - traj.total_tokens)

    def next_turn(index: int) -> Continuation | None:
        traj = trajs[index]
        return None if traj.done else Continuation(traj.inserted_after_last_turn(), room(traj))

    def on_turn_end(ended: list[tuple[int, GenerationOutput]]) -> list:
        start = time.perf_counter()
        keys, queries, answers = [], [], []
        for index, out in ended:
            traj = trajs[index]
            action = engine._take_turn(traj, out, final=traj.num_turns >= cfg.max_turns)
            if action is not None and action.kind == "search":
                keys.append(index)
                queries.append(action.content)
                answers.append(PENDING)
            else:
                answers.append(next_turn(index))
        if keys:
            worker.submit(keys, queries)
        spent["callback"] += time.perf_counter() - start
        return answers

    def poll(block: bool) -> list[tuple[int, Continuation | None]]:
        start = time.perf_counter()
        ready = []
        for job in worker.ready(block):
            searches = [(trajs[i], q) for i, q in zip(job.keys, job.queries)]
            engine._apply_searches(searches, job.results, job.error)
            ready += [(i, next_turn(i)) for i in job.keys]
        spent["callback"] += time.perf_counter() - start
        return ready

    worker = SearchWorker(lambda queries: engine.retriever.search(queries, cfg.topk))
    params = engine._sampling_params(cfg.max_response_tokens, seed, 0)
    start = time.perf_counter()
    try:
        engine.backend.generate_multiturn(  # type: ignore[attr-defined]
            [t.prompt_ids for t in trajs], params, on_turn_end, max_new_tokens=[room(t) for t in trajs], poll=poll
        )
    finally:
        worker.close()
    return time.perf_counter() - start - spent["callback"], worker.busy_seconds
