"""Continuous batching in the HF backend: same trajectories as the turn-by-turn reference, packed-cache math."""

from __future__ import annotations

import pytest
import torch

from searchr1.rollout import HFBackend, RolloutConfig, RolloutEngine, SamplingParams
from searchr1.rollout.backends.base import Continuation
from searchr1.rollout.backends.decoding import chunk_positions, gather_columns, right_align_index, sample_next
from tests.rollout.conftest import assert_masks_match_text

QUESTIONS = ["Who directed Ed Wood?", "What government position was held by the actress in Kiss and Tell", "x"]


def test_right_align_index_hand_worked() -> None:
    mask = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1]])
    index, packed = right_align_index(mask)
    assert packed.tolist() == [[0, 0, 1, 1], [0, 0, 0, 1], [1, 1, 1, 1]]
    assert index.tolist() == [[0, 0, 0, 2], [3, 3, 3, 3], [0, 1, 2, 3]]  # padding slots repeat the first real column
    states = torch.arange(3 * 4, dtype=torch.float32).view(3, 1, 4, 1)
    assert gather_columns(states, index)[:, 0, :, 0].tolist() == [[0, 0, 0, 2], [7, 7, 7, 7], [8, 9, 10, 11]]


def test_chunk_positions_continue_each_row() -> None:
    past = torch.tensor([[0, 1, 1], [1, 1, 1]])
    chunk = torch.tensor([[0, 1, 1], [1, 1, 1]])
    assert chunk_positions(past, chunk).tolist() == [[2, 2, 3], [3, 4, 5]]


def loop_top_p_reference(probs: list[float], top_p: float) -> set[int]:
    """Indices kept by nucleus sampling: most likely first, until the kept mass reaches top_p."""
    kept, mass = set(), 0.0
    for i in sorted(range(len(probs)), key=lambda i: -probs[i]):
        if mass >= top_p:
            break
        kept.add(i)
        mass += probs[i]
    return kept


@pytest.mark.parametrize(("top_k", "top_p"), [(0, 0.5), (0, 0.85), (0, 0.95), (2, 1.0), (3, 0.65)])
def test_sampling_support_matches_a_loop_reference(top_k: int, top_p: float) -> None:
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]]))
    drawn = set()
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        token, logprob = sample_next(logits, 1.0, top_k, top_p, True, gen)
        drawn.add(int(token))
        assert float(logprob) == pytest.approx(float(torch.log_softmax(logits, -1)[0, int(token)]), abs=1e-6)
    probs = [0.4, 0.3, 0.2, 0.1][: top_k or 4]
    assert drawn == loop_top_p_reference(probs, top_p)


def test_continuous_equals_turn_by_turn_greedy(tiny_model, tiny_tokenizer, bm25) -> None:
    """Same greedy trajectories with a persistent packed cache (batch 2: admission) as re-encoding every turn."""
    common = dict(max_turns=2, max_response_tokens=20, max_total_tokens=400, max_prompt_tokens=300, do_sample=False)
    runs = {}
    for continuous in (True, False):
        cfg = RolloutConfig(**common, continuous_batching=continuous)
        engine = RolloutEngine(HFBackend(tiny_model, tiny_tokenizer, batch_size=2), bm25, tiny_tokenizer, cfg)
        runs[continuous] = engine.generate_for_questions(QUESTIONS, n=1)
    fast, ref = runs[True].trajectories, runs[False].trajectories
    assert sum(t.num_turns for t in ref) > len(ref)  # some trajectory went on after a first turn
    for a, b in zip(fast, ref):
        assert a.response_ids == b.response_ids and a.loss_mask == b.loss_mask
        assert a.finish_reason == b.finish_reason and a.num_turns == b.num_turns
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
        assert_masks_match_text(tiny_tokenizer, a)


def test_callback_drives_rows_independently(tiny_model, tiny_tokenizer) -> None:
    """Rows end turns at their own steps; continued rows resume from their cache, finished ones leave."""
    backend = HFBackend(tiny_model, tiny_tokenizer, batch_size=2)
    prompts = [tiny_tokenizer(q, add_special_tokens=False).input_ids for q in QUESTIONS]
    insert = tiny_tokenizer(" <information> Ed Wood </information>", add_special_tokens=False).input_ids
    calls: list[list[int]] = []
    turns: dict[int, list[list[int]]] = {i: [] for i in range(len(prompts))}

    def on_turn_end(ended):
        calls.append([i for i, _ in ended])
        out = []
        for i, gen in ended:
            turns[i].append(gen.token_ids)
            out.append(Continuation(insert, 3 + i) if len(turns[i]) < 2 + i else None)
        return out

    params = SamplingParams(max_new_tokens=4, do_sample=False)
    backend.generate_multiturn(prompts, params, on_turn_end, max_new_tokens=[2, 4, 6])
    assert [len(t) for t in turns.values()] == [2, 3, 4]
    assert [len(t) for t in turns[2]] == [6, 5, 5, 5] and [len(t) for t in turns[0]] == [2, 3]
    # each row's history equals a plain greedy continuation of prompt + turns + inserts
    for i, p in enumerate(prompts):
        context = list(p)
        for k, sampled in enumerate(turns[i]):
            (single,) = backend.generate([context], SamplingParams(max_new_tokens=len(sampled), do_sample=False))
            assert single.token_ids == sampled, (i, k)
            context += sampled + insert
    assert calls[0] == [0]  # row 0 ends its first turn alone, at step 2, while row 1 goes on
