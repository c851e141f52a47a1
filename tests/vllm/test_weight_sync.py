"""sync_weights: after perturbing the HF policy in memory and syncing, vLLM follows the new weights exactly."""

from __future__ import annotations

import pytest
import torch

from searchr1.rollout.backends.base import SamplingParams
from tests.vllm.conftest import hf_greedy, hf_logprobs
from tests.vllm.test_generate import assert_same_greedy

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

GREEDY = SamplingParams(max_new_tokens=16, do_sample=False)


@pytest.fixture()
def restore_weights(backend, vllm_model_dir):
    """Put the original weights back into the shared engine after the test."""
    yield
    from transformers import AutoModelForCausalLM

    original = AutoModelForCausalLM.from_pretrained(vllm_model_dir, dtype=torch.float32)
    backend.sync_weights(original.state_dict().items())


def _perturb(model, names: tuple[str, ...] | None, std: float, seed: int) -> None:
    """Add N(0, std^2) noise to the parameters whose name contains one of ``names`` (all when None)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if names is None or any(n in name for n in names):
                param.add_(torch.randn(param.shape, generator=gen) * std)


def _check_follows(backend, model, prompts) -> list[list[int]]:
    """vLLM greedy ids equal HF greedy, and vLLM's logprobs equal HF teacher-forced ones."""
    outputs = backend.generate(prompts, GREEDY)
    for prompt, out in zip(prompts, outputs):
        assert_same_greedy(out.token_ids, hf_greedy(model, prompt, GREEDY.max_new_tokens))
        torch.testing.assert_close(
            torch.tensor(out.logprobs), hf_logprobs(model, prompt, out.token_ids), atol=2e-4, rtol=1e-4
        )
    return [o.token_ids for o in outputs]


@pytest.mark.parametrize("source", ["state_dict", "named_parameters"])
def test_sync_all_weights_from_memory(backend, hf_model, prompts, restore_weights, source):
    """``named_parameters()`` (what the trainer sends) lists a tied head once, as the embedding only."""
    before = _check_follows(backend, hf_model, prompts)
    _perturb(hf_model, None, std=0.1, seed=0)
    tensors = list(hf_model.state_dict().items() if source == "state_dict" else hf_model.named_parameters())
    backend.sync_weights(tensors)
    print(f"\nvLLM weight sync ({len(tensors)} tensors, {source}): {backend.last_sync_seconds * 1000:.1f} ms")
    after = _check_follows(backend, hf_model, prompts)
    assert after != before  # the same prompts (prefix cache!) now decode differently


def test_sync_only_the_tied_embedding_updates_the_lm_head(backend, hf_model, prompts, restore_weights):
    """Tied checkpoints carry no separate head: the head must follow the reloaded embedding matrix."""
    assert hf_model.config.tie_word_embeddings
    before = _check_follows(backend, hf_model, prompts)
    _perturb(hf_model, ("embed_tokens",), std=0.2, seed=1)
    backend.sync_weights((n, t) for n, t in hf_model.state_dict().items() if "embed_tokens" in n)
    assert _check_follows(backend, hf_model, prompts) != before


def test_sync_accepts_bfloat16_tensors(backend, hf_model, prompts, restore_weights):
    """The trainer may hold bf16 weights; the engine (float32 here) casts them on load."""
    _perturb(hf_model, None, std=0.1, seed=2)
    with torch.no_grad():  # round the reference's parameters (not its rotary buffers) to what bf16 transport keeps
        for param in hf_model.parameters():
            param.copy_(param.to(torch.bfloat16))
    backend.sync_weights((n, t.to(torch.bfloat16)) for n, t in hf_model.state_dict().items())
    _check_follows(backend, hf_model, prompts)


@pytest.mark.slow
def test_multiprocess_engine_syncs_through_shared_memory(vllm_model_dir, hf_model, prompts):
    """``in_process=False``: vLLM's engine runs in its own (spawned) process; sync goes via a /dev/shm file."""
    from searchr1.rollout.backends.vllm import VLLMBackend

    engine = VLLMBackend(
        model=str(vllm_model_dir), dtype="float32", max_model_len=512, enforce_eager=True, in_process=False
    )
    try:
        assert not engine.engine_in_process
        _perturb(hf_model, None, std=0.1, seed=4)
        engine.sync_weights(hf_model.named_parameters())
        print(f"\nmultiprocess engine: startup {engine.startup_seconds:.1f} s, sync {engine.last_sync_seconds:.3f} s")
        _check_follows(engine, hf_model, prompts)
    finally:
        engine.shutdown()
