"""The behaviour log-prob means the trainer's full-vocabulary ``log_softmax(logits / T)``, whatever top-p: the HF
backend records exactly what the trainer recomputes (so ``mismatch_kl`` is 0 and TIS/MIS weights are 1 with the same
weights), and ``fit`` refuses vLLM settings that cannot record it (``behaviour_logprob_problem``)."""

from __future__ import annotations

import pytest
import torch

from searchr1.algorithms.correction import rollout_correction_weights
from searchr1.rollout import HFBackend, RolloutConfig, RolloutEngine, SamplingParams
from searchr1.rollout.backends.behaviour import behaviour_logprob_problem
from searchr1.training.forward import batched_logprobs

QUESTIONS = ["Who directed Ed Wood?", "What government position was held by the actress in Kiss and Tell"]
TEMPERATURE, TOP_P = 0.8, 0.5


def nucleus_logprobs(model, batch, temperature: float, top_p: float) -> torch.Tensor:
    """(B, R) log-probs renormalised over each step's top-p set (what vLLM's ``processed_logprobs`` report)."""
    with torch.no_grad():
        logits = model(batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids).logits
    p = batch.prompt_length
    probs = torch.softmax(logits[:, p - 1 : -1].float() / temperature, dim=-1)  # (B, R, V)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    drop = (sorted_probs.cumsum(-1) - sorted_probs) >= top_p  # strictly more likely tokens already cover top_p
    kept = sorted_probs.masked_fill(drop, 0.0).sum(-1)  # (B, R) nucleus mass
    return torch.log(probs.gather(-1, batch.responses.unsqueeze(-1)).squeeze(-1) / kept)


def test_hf_behaviour_logprobs_are_the_trainers_full_vocab_logprobs_under_top_p(
    tiny_model, tiny_tokenizer, bm25
) -> None:
    cfg = RolloutConfig(
        max_turns=2, max_response_tokens=24, max_total_tokens=400, max_prompt_tokens=300,
        temperature=TEMPERATURE, top_p=TOP_P, do_sample=True,
    )  # fmt: skip
    batch = RolloutEngine(HFBackend(tiny_model, tiny_tokenizer), bm25, tiny_tokenizer, cfg).generate_for_questions(
        QUESTIONS, n=2, seed=0
    )
    mask = batch.loss_mask
    assert mask.sum() > 50
    # the trainer's own pass (the old log-probs of the update), same weights
    old = batched_logprobs(tiny_model, batch, TEMPERATURE, token_budget=4096)  # (B, R), 0 off the mask
    torch.testing.assert_close(batch.rollout_logprobs, old, atol=2e-4, rtol=1e-4)
    weights, metrics = rollout_correction_weights(old, batch.rollout_logprobs, mask, "mis", 2.0, "sequence")
    assert float(metrics["mismatch_kl"]) < 1e-6 and float(metrics["masked_share"]) == 0.0
    torch.testing.assert_close(weights, mask.float(), atol=1e-3, rtol=0)  # sequence MIS keeps every token
    # what a nucleus-renormalised behaviour log-prob would have shown with no engine mismatch at all
    nucleus = nucleus_logprobs(tiny_model, batch, TEMPERATURE, TOP_P) * mask
    _, fake = rollout_correction_weights(old, nucleus, mask, "mis", 2.0, "sequence")
    assert float(fake["mismatch_kl"]) > 0.05 and float(fake["masked_share"]) > 0.5  # a false alarm, many drops


@pytest.mark.parametrize(
    ("mode", "temperature", "top_p", "top_k", "ok"),
    [
        ("raw_logprobs", 1.0, 0.95, 0, True),  # the paper configs: raw log-probs are the behaviour log-probs
        ("raw_logprobs", 1.0, 1.0, 20, True),
        ("raw_logprobs", 0.7, 1.0, 0, False),  # raw ignores temperature
        ("processed_logprobs", 0.7, 1.0, 0, True),  # temperature only: processed = log_softmax(logits / T)
        ("processed_logprobs", 1.0, 0.95, 0, False),  # renormalised over the nucleus
        ("processed_logprobs", 1.0, 1.0, 5, False),
        ("raw_logprobs", 0.7, 0.9, 0, False),  # no vLLM mode records this one
    ],
)
def test_vllm_modes_that_can_record_the_behaviour_logprob(mode, temperature, top_p, top_k, ok) -> None:
    params = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, do_sample=True)
    problem = behaviour_logprob_problem(mode, params)
    assert (problem is None) == ok, problem
    if not ok:
        assert "log_softmax(logits / T)" in problem and ("logprobs_mode" in problem or "temperature 1" in problem)
    greedy = SamplingParams(temperature=0.7, top_p=0.5, do_sample=False)
    assert behaviour_logprob_problem(mode, greedy) is None  # greedy: log_softmax(logits) in both modes


def test_fit_refuses_vllm_settings_without_a_recording_mode() -> None:
    from searchr1.training.engine_weights import check_behaviour_logprobs
    from searchr1.training.scaling import SetupError

    check_behaviour_logprobs("vllm", {}, RolloutConfig(temperature=1.0, top_p=0.95))  # the paper configs
    check_behaviour_logprobs("hf", {}, RolloutConfig(temperature=0.7, top_p=0.5))  # HF records it for any setting
    check_behaviour_logprobs("vllm", {"logprobs_mode": "processed_logprobs"}, RolloutConfig(temperature=0.7))
    with pytest.raises(SetupError, match=r"backend 'vllm': vLLM's raw_logprobs ignore temperature"):
        check_behaviour_logprobs("vllm", {}, RolloutConfig(temperature=0.7))
    with pytest.raises(SetupError, match="renormalised over the top-p/top-k set"):
        check_behaviour_logprobs("vllm", {"logprobs_mode": "processed_logprobs"}, RolloutConfig(top_p=0.9))
