"""Retrieval off the decode path: parked rows re-enter with their cache intact and the same tokens; the search
worker batches queued moments and hands errors back."""

from __future__ import annotations

import threading

import pytest

from searchr1.rollout import HFBackend, SamplingParams
from searchr1.rollout.backends.base import PENDING, Continuation
from searchr1.rollout.search_worker import SearchWorker

QUESTIONS = ["Who directed Ed Wood?", "What government position was held by the actress in Kiss and Tell", "x"]


def _run(model, tokenizer, pending: bool, do_sample: bool):
    """Rows 0 and 1 'search' after each of their first two turns; row 2 never waits. Returns turns per row."""
    backend = HFBackend(model, tokenizer, batch_size=3)
    prompts = [tokenizer(q, add_special_tokens=False).input_ids for q in QUESTIONS]
    insert = tokenizer(" <information> Ed Wood </information>", add_special_tokens=False).input_ids
    turns: dict[int, list[tuple[list[int], list[float]]]] = {i: [] for i in range(3)}
    waiting: dict[int, int] = {}  # row -> polls left before its observation is "ready"
    decoded_while_parked = []

    def continuation(i):
        return Continuation(insert, 5) if len(turns[i]) < 3 else None

    def on_turn_end(ended):
        out = []
        for i, gen in ended:
            turns[i].append((gen.token_ids, gen.logprobs))
            if pending and i < 2 and len(turns[i]) < 3:
                waiting[i] = 3 + 4 * i  # row 1 waits longer than row 0: re-entry order differs from the sync run
                out.append(PENDING)
            else:
                out.append(continuation(i))
        return out

    def poll(block):
        decoded_while_parked.append(not block)
        ready = []
        for i in sorted(waiting):
            waiting[i] -= 1
            if waiting[i] <= 0 or block:
                del waiting[i]
                ready.append((i, continuation(i)))
        return ready

    params = SamplingParams(max_new_tokens=4, do_sample=do_sample, temperature=1.0, seed=7)
    backend.generate_multiturn(prompts, params, on_turn_end, poll=poll if pending else None)
    return turns, decoded_while_parked


@pytest.mark.parametrize("do_sample", [False, True], ids=["greedy", "seeded-sampling"])
def test_parked_rows_resume_with_the_same_tokens_as_without_waiting(tiny_model, tiny_tokenizer, do_sample):
    ref, _ = _run(tiny_model, tiny_tokenizer, pending=False, do_sample=do_sample)
    got, nonblocking_polls = _run(tiny_model, tiny_tokenizer, pending=True, do_sample=do_sample)
    assert sum(nonblocking_polls) >= 3  # other rows kept decoding while rows waited
    for i in range(3):
        assert len(got[i]) == len(ref[i]) == 3
        for (ids_a, lp_a), (ids_b, lp_b) in zip(got[i], ref[i]):
            assert ids_a == ids_b  # a corrupted cache or a shared RNG stream would change the tokens
            assert lp_a == pytest.approx(lp_b, abs=1e-4)


def test_worker_merges_queued_moments_and_returns_errors():
    gate, calls = threading.Event(), []

    def search(queries):
        calls.append(list(queries))
        gate.wait(5)
        if "boom" in queries:
            raise RuntimeError("server down")
        return [q.upper() for q in queries]

    worker = SearchWorker(search)
    try:
        worker.submit([0], ["a"])
        while not calls:  # the first call is running; the next two moments queue behind it
            pass
        worker.submit([1, 2], ["b", "c"])
        worker.submit([3], ["d"])
        gate.set()
        jobs = []
        while len(jobs) < 3:
            jobs += worker.ready(block=True)
        assert calls == [["a"], ["b", "c", "d"]]  # one call per moment, queued moments together
        assert {tuple(j.keys): j.results for j in jobs} == {(0,): ["A"], (1, 2): ["B", "C"], (3,): ["D"]}
        worker.submit([4], ["boom"])
        (failed,) = worker.ready(block=True)
        assert isinstance(failed.error, RuntimeError) and failed.results is None
        assert worker.ready(block=True) == []  # nothing outstanding: returns at once
    finally:
        worker.close()
