"""HF backend on the tiny Qwen2: log-probs equal a teacher-forced forward pass, stop strings, seeds, modes."""

from __future__ import annotations

import copy

import pytest
import torch

from searchr1.rollout import HFBackend, RolloutConfig, RolloutEngine, SamplingParams
from tests.rollout.conftest import assert_masks_match_text

QUESTIONS = ["Who directed Ed Wood?", "What government position was held by the actress in Kiss and Tell"]


def teacher_forced_logprobs(model, batch, temperature: float) -> torch.Tensor:
    """(B, R) log_softmax(logits / T) of each response token from one forward pass over the padded batch."""
    with torch.no_grad():
        logits = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
        ).logits.float()
    p = batch.prompt_length
    logp = torch.log_softmax(logits[:, p - 1 : -1] / temperature, dim=-1)  # predicts tokens p .. p+R-1
    return logp.gather(-1, batch.responses.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize(("temperature", "do_sample"), [(0.7, True), (1.0, False)])
def test_rollout_logprobs_match_teacher_forcing(tiny_model, tiny_tokenizer, bm25, temperature, do_sample) -> None:
    cfg = RolloutConfig(
        max_turns=2, max_response_tokens=24, max_total_tokens=400, max_prompt_tokens=300,
        temperature=temperature, do_sample=do_sample, top_p=0.95,
    )  # fmt: skip
    engine = RolloutEngine(HFBackend(tiny_model, tiny_tokenizer, batch_size=3), bm25, tiny_tokenizer, cfg)
    # hub-style generation defaults on the model (as Qwen instruct ships) must not leak into sampling
    saved = tiny_model.generation_config
    tiny_model.generation_config = copy.deepcopy(saved)
    tiny_model.generation_config.update(repetition_penalty=1.05, top_k=20, top_p=0.8, temperature=0.3)
    try:
        batch = engine.generate_for_questions(QUESTIONS, n=2, seed=0)
    finally:
        tiny_model.generation_config = saved
    mask = batch.loss_mask.bool()
    assert mask.sum() > 50 and (batch.response_mask.bool() & ~mask).any()  # sampled and inserted tokens present
    reference = teacher_forced_logprobs(tiny_model, batch, temperature)
    torch.testing.assert_close(batch.rollout_logprobs[mask], reference[mask], atol=2e-4, rtol=1e-4)
    assert (batch.rollout_logprobs[~mask] == 0).all()
    for t in batch.trajectories:
        assert_masks_match_text(tiny_tokenizer, t)
        assert t.finish_reason in ("answer", "eos", "max_turns", "length", "truncated")
    assert batch.group_ids.tolist() == [0, 0, 1, 1]


def test_stop_strings_end_right_after_the_completing_token(tiny_model, tiny_tokenizer) -> None:
    backend = HFBackend(tiny_model, tiny_tokenizer)
    prompt = tiny_tokenizer("<think> Ed Wood", add_special_tokens=False).input_ids
    greedy = SamplingParams(max_new_tokens=30, do_sample=False, stop=[])
    (free,) = backend.generate([prompt], greedy)
    assert free.finish_reason in ("length", "eos") and len(free.token_ids) > 12
    # pick a stop string from the middle of the greedy continuation: generation must end at the first
    # token whose text completes it, and the ids must be a prefix of the unconstrained greedy ids
    stop = tiny_tokenizer.decode(free.token_ids[10:12])
    first_end = next(k for k in range(1, len(free.token_ids) + 1) if stop in tiny_tokenizer.decode(free.token_ids[:k]))
    (out,) = backend.generate([prompt], SamplingParams(max_new_tokens=30, do_sample=False, stop=[stop, "</zzz>"]))
    assert out.finish_reason == "stop" and out.stop_string == stop
    assert out.token_ids == free.token_ids[:first_end]
    assert out.logprobs == pytest.approx(free.logprobs[:first_end], abs=1e-5)


def test_batched_equals_single_and_finished_rows_stop(tiny_model, tiny_tokenizer) -> None:
    backend = HFBackend(tiny_model, tiny_tokenizer, batch_size=2)
    prompts = [tiny_tokenizer(q, add_special_tokens=False).input_ids for q in QUESTIONS + ["x", "Ed Wood"]]
    params = SamplingParams(max_new_tokens=12, do_sample=False, stop=["</search>"])
    batched = backend.generate(prompts, params)
    for p, out in zip(prompts, batched):
        (single,) = backend.generate([p], params)
        assert single.token_ids == out.token_ids
        assert single.logprobs == pytest.approx(out.logprobs, abs=1e-4)
        assert len(out.token_ids) == len(out.logprobs) <= 12


def test_seed_reproducible_without_touching_global_rng(tiny_model, tiny_tokenizer) -> None:
    backend = HFBackend(tiny_model, tiny_tokenizer)
    prompts = [tiny_tokenizer("Ed Wood", add_special_tokens=False).input_ids] * 3
    params = SamplingParams(max_new_tokens=10, temperature=1.0, seed=123)
    torch.manual_seed(7)
    expected_next = torch.rand(1)
    torch.manual_seed(7)
    a = backend.generate(prompts, params)
    assert torch.equal(torch.rand(1), expected_next)  # global RNG untouched
    b = backend.generate(prompts, params)
    assert [o.token_ids for o in a] == [o.token_ids for o in b]
    assert len({tuple(o.token_ids) for o in a}) > 1  # rows of one batch draw different samples


def test_restores_training_mode(tiny_model, tiny_tokenizer) -> None:
    backend = HFBackend(tiny_model, tiny_tokenizer)
    prompt = [tiny_tokenizer("hi", add_special_tokens=False).input_ids]
    tiny_model.train()
    try:
        backend.generate(prompt, SamplingParams(max_new_tokens=2))
        assert tiny_model.training
    finally:
        tiny_model.eval()
    backend.generate(prompt, SamplingParams(max_new_tokens=2))
    assert not tiny_model.training
