"""What vLLM's two log-prob modes record against the trainer's full-vocabulary ``log_softmax(logits / T)``:
``raw_logprobs`` (default) ignores temperature, ``processed_logprobs`` renormalises over top-p; ``fit`` refuses the
settings where the engine's mode does not give the trainer's value (``behaviour_logprob_problem``)."""

from __future__ import annotations

import pytest
import torch

from searchr1.rollout import SamplingParams
from searchr1.rollout.backends.behaviour import behaviour_logprob_problem
from tests.vllm.conftest import hf_logprobs

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm


def test_raw_mode_ignores_temperature_which_is_why_fit_refuses_it(backend, hf_model, prompts):
    params = SamplingParams(max_new_tokens=8, do_sample=True, temperature=0.7, seed=0)
    for prompt, out in zip(prompts, backend.generate(prompts, params)):  # raw: log_softmax(logits), no temperature
        torch.testing.assert_close(
            torch.tensor(out.logprobs), hf_logprobs(hf_model, prompt, out.token_ids), atol=2e-4, rtol=1e-4
        )
    assert behaviour_logprob_problem(backend.logprobs_mode, params) is not None  # so training refuses it


@pytest.mark.slow
def test_processed_mode_records_temperature_but_renormalises_top_p(vllm_model_dir, hf_model, prompts):
    from searchr1.rollout.backends.vllm import VLLMBackend

    # its own engine process: shutting down a second in-process engine would tear down the session engine's groups
    engine = VLLMBackend(
        model=str(vllm_model_dir), dtype="float32", max_model_len=512, enforce_eager=True, cpu_kvcache_space_gib=1,
        logprobs_mode="processed_logprobs", in_process=False,
    )  # fmt: skip
    try:
        params = SamplingParams(max_new_tokens=12, do_sample=True, temperature=0.7, seed=5)
        for prompt, out in zip(prompts, engine.generate(prompts, params)):
            ref = hf_logprobs(hf_model, prompt, out.token_ids, temperature=0.7)
            torch.testing.assert_close(torch.tensor(out.logprobs), ref, atol=2e-4, rtol=1e-4)
        nucleus = SamplingParams(max_new_tokens=8, do_sample=True, temperature=1.0, top_p=0.5, seed=5)
        for prompt, out in zip(prompts, engine.generate(prompts, nucleus)):  # renormalised: above the full softmax
            full = hf_logprobs(hf_model, prompt, out.token_ids)
            assert (torch.tensor(out.logprobs) > full + 1e-3).any() and (
                torch.tensor(out.logprobs) >= full - 2e-4
            ).all()
        assert behaviour_logprob_problem(engine.logprobs_mode, nucleus) is not None  # so training refuses it
    finally:
        engine.shutdown()
