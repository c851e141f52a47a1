"""The multi-turn RolloutEngine on VLLMBackend: same trajectories as on HFBackend (greedy), and rollout log-probs
equal a teacher-forced forward pass over the padded batch (sampling)."""

from __future__ import annotations

import pytest
import torch

from searchr1.rollout import HFBackend, RolloutConfig, RolloutEngine
from tests.rollout.conftest import assert_masks_match_text

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

QUESTIONS = ["Who directed Ed Wood?", "What government position was held by the actress in Kiss and Tell"]


def _config(**overrides) -> RolloutConfig:
    base = {"max_turns": 2, "max_response_tokens": 24, "max_total_tokens": 480, "max_prompt_tokens": 300}
    return RolloutConfig(**(base | overrides))


@pytest.mark.parametrize("continuous", [True, False])
def test_greedy_rollout_equals_hf_backend(backend, hf_model, tokenizer, bm25, continuous):
    """vLLM continuous batching (engine stepped directly) or turn by turn == HF's packed-cache loop, greedy."""
    ours = RolloutEngine(backend, bm25, tokenizer, _config(do_sample=False, continuous_batching=continuous))
    ours = ours.generate_for_questions(QUESTIONS, n=1)
    cfg = _config(do_sample=False)
    ref = RolloutEngine(HFBackend(hf_model, tokenizer), bm25, tokenizer, cfg).generate_for_questions(QUESTIONS, n=1)
    assert sum(t.num_turns for t in ref.trajectories) > len(QUESTIONS)  # multi-turn
    for a, b in zip(ours.trajectories, ref.trajectories):
        assert a.response_ids == b.response_ids
        assert a.loss_mask == b.loss_mask
        assert a.finish_reason == b.finish_reason
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=2e-4, rtol=1e-4)
        assert_masks_match_text(tokenizer, a)


def test_sampled_rollout_logprobs_match_teacher_forcing(backend, hf_model, tokenizer, bm25):
    cfg = _config(temperature=1.0, top_p=0.9)  # the paper configs' kind of setting: temperature 1, a nucleus
    batch = RolloutEngine(backend, bm25, tokenizer, cfg).generate_for_questions(QUESTIONS, n=2, seed=0)
    with torch.no_grad():
        logits = hf_model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
        ).logits.float()  # (B, P+R, V)
    p = batch.prompt_length
    logp = torch.log_softmax(logits[:, p - 1 : -1] / cfg.temperature, dim=-1)  # (B, R, V)
    reference = logp.gather(-1, batch.responses.unsqueeze(-1)).squeeze(-1)  # (B, R)
    mask = batch.loss_mask.bool()
    inserted = int((batch.response_mask.bool() & ~mask).sum())
    print(f"\nsampled rollout: {int(mask.sum())} policy tokens, {inserted} inserted")
    # top_p < 1 and still the trainer's full-vocabulary log-probs (raw_logprobs), not the nucleus-renormalised ones
    torch.testing.assert_close(batch.rollout_logprobs[mask], reference[mask], atol=2e-4, rtol=1e-4)
    assert batch.group_ids.tolist() == [0, 0, 1, 1]
    for t in batch.trajectories:
        assert_masks_match_text(tokenizer, t)
