"""VLLMBackend generation against an HF reference on the same tiny model: ids, stop strings, EOS, logprobs."""

from __future__ import annotations

import pytest
import torch

from searchr1.rollout.backends.base import SamplingParams
from tests.vllm.conftest import EOS_STEP, hf_greedy, hf_logprobs

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

NEAR_TIE = 1e-3  # logit margin under which float32 kernels may legitimately order the top two differently


def assert_same_greedy(vllm_ids: list[int], ref) -> None:
    """Equal token for token; a difference is tolerated only from a near-tie step of the reference on."""
    for step, (got, want) in enumerate(zip(vllm_ids, ref.token_ids)):
        if got != want:
            assert ref.margins[step] < NEAR_TIE, f"step {step}: vLLM {got} != HF {want} (margin {ref.margins[step]})"
            return
    assert len(vllm_ids) == len(ref.token_ids)


def test_greedy_matches_hf_token_for_token(backend, hf_model, prompts):
    outputs = backend.generate(prompts, SamplingParams(max_new_tokens=24, do_sample=False))
    assert len(outputs) == len(prompts)
    for prompt, out in zip(prompts, outputs):
        ref = hf_greedy(hf_model, prompt, 24)
        assert_same_greedy(out.token_ids, ref)
        assert out.finish_reason == ref.finish_reason
        assert out.stop_string is None
        assert len(out.logprobs) == len(out.token_ids)


def test_eos_is_returned_and_reported(backend, hf_model, prompts):
    """The last prompt's greedy continuation hits the extra EOS id at step EOS_STEP: the id is kept."""
    out = backend.generate([prompts[-1]], SamplingParams(max_new_tokens=24, do_sample=False))[0]
    assert out.finish_reason == "eos"
    assert len(out.token_ids) == EOS_STEP + 1
    assert out.token_ids == hf_greedy(hf_model, prompts[-1], 24).token_ids
    assert out.token_ids[-1] in hf_model.generation_config.eos_token_id


def test_stop_string_ends_output_right_after_it(backend, tokenizer, prompts):
    """Take a stop string from the middle of the unconstrained greedy text; generation must end on its token."""
    params = SamplingParams(max_new_tokens=24, do_sample=False)
    free = backend.generate([prompts[0]], params)[0].token_ids
    stop = tokenizer.decode(free[10:12])
    first = next(k for k in range(1, len(free) + 1) if stop in tokenizer.decode(free[:k]))  # tokens up to the stop
    out = backend.generate([prompts[0]], SamplingParams(max_new_tokens=24, do_sample=False, stop=[stop]))[0]
    assert out.finish_reason == "stop"
    assert out.stop_string == stop
    assert out.token_ids == free[:first]
    assert stop in tokenizer.decode(out.token_ids)
    assert stop not in tokenizer.decode(out.token_ids[:-1])
    assert len(out.logprobs) == first


def test_greedy_logprobs_match_hf_teacher_forcing(backend, hf_model, prompts):
    for prompt, out in zip(prompts, backend.generate(prompts, SamplingParams(max_new_tokens=16, do_sample=False))):
        ref = hf_logprobs(hf_model, prompt, out.token_ids)
        torch.testing.assert_close(torch.tensor(out.logprobs), ref, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("top_p", [1.0, 0.5])
def test_sampled_logprobs_are_the_full_vocabulary_behaviour_logprobs(backend, hf_model, prompts, top_p):
    """Default ``raw_logprobs`` at temperature 1: log_softmax(logits) over the whole vocabulary, top-p or not."""
    params = SamplingParams(max_new_tokens=16, do_sample=True, temperature=1.0, top_p=top_p, seed=3)
    for prompt, out in zip(prompts, backend.generate(prompts, params)):
        ref = hf_logprobs(hf_model, prompt, out.token_ids)
        torch.testing.assert_close(torch.tensor(out.logprobs), ref, atol=2e-4, rtol=1e-4)


def test_seeded_sampling_is_reproducible_and_differs_across_a_group(backend, prompts):
    params = SamplingParams(max_new_tokens=12, do_sample=True, temperature=1.0, seed=7)
    group = [prompts[0]] * 4  # a GRPO group: the same prompt four times
    first = [o.token_ids for o in backend.generate(group, params)]
    again = [o.token_ids for o in backend.generate(group, params)]
    assert first == again
    assert len({tuple(ids) for ids in first}) > 1


def test_top_k_one_is_greedy(backend, prompts):
    greedy = backend.generate(prompts, SamplingParams(max_new_tokens=12, do_sample=False))
    top1 = backend.generate(prompts, SamplingParams(max_new_tokens=12, do_sample=True, top_k=1, seed=0))
    assert [o.token_ids for o in greedy] == [o.token_ids for o in top1]
    for out, g in zip(top1, greedy):  # the behaviour log-prob is the full vocabulary's, not the one-hot top-1's 0
        torch.testing.assert_close(torch.tensor(out.logprobs), torch.tensor(g.logprobs), atol=2e-4, rtol=1e-4)
        assert max(out.logprobs) < -1e-3


def test_sleep_and_wake_up(backend, prompts):
    params = SamplingParams(max_new_tokens=8, do_sample=False)
    before = backend.generate(prompts, params)
    backend.sleep()
    with pytest.raises(RuntimeError, match="wake_up"):
        backend.generate(prompts, params)
    backend.wake_up()
    assert [o.token_ids for o in backend.generate(prompts, params)] == [o.token_ids for o in before]
    assert backend.generate([], params) == []
