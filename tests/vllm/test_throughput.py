"""Measurement (not a timing assertion): vLLM startup, weight-sync seconds and greedy tokens/s vs HF ``generate``.

Prints one JSON line; run with ``-s`` to see it. Both sides decode the same prompts greedily in one batch on
the same CPU threads; the ratio is what to compare, not the absolute numbers.
"""

from __future__ import annotations

import json
import time

import pytest
import torch

from searchr1.rollout.backends.base import SamplingParams

pytest.importorskip("vllm")
pytestmark = [pytest.mark.vllm, pytest.mark.slow]

PROMPT_LEN = 32
NEW_TOKENS = 64
REPEATS = 3  # best of: the 2 shared cores make single timings noisy


def _hf_generate(model, prompts: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Greedy HF ``generate`` with KV cache; returns the new ids (B, NEW_TOKENS) and seconds."""
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            prompts,
            attention_mask=torch.ones_like(prompts),
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
        )
    return out[:, PROMPT_LEN:], time.perf_counter() - start


@pytest.mark.parametrize("batch_size", [8, 32])
def test_report_throughput_vs_hf(backend, hf_model, batch_size):
    gen = torch.Generator().manual_seed(batch_size)
    prompts = torch.randint(3, hf_model.config.vocab_size, (batch_size, PROMPT_LEN), generator=gen)  # (B, P)
    _hf_generate(hf_model, prompts[:1])  # warm-up
    hf_runs = [_hf_generate(hf_model, prompts) for _ in range(REPEATS)]
    hf_ids, hf_seconds = hf_runs[0][0], min(seconds for _, seconds in hf_runs)
    params = SamplingParams(max_new_tokens=NEW_TOKENS, do_sample=False)
    backend.generate(prompts[:1].tolist(), params)  # warm-up
    vllm_seconds = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        outputs = backend.generate(prompts.tolist(), params)
        vllm_seconds = min(vllm_seconds, time.perf_counter() - start)
    vllm_tokens = sum(len(o.token_ids) for o in outputs)
    assert all(len(o.token_ids) == len(o.logprobs) > 0 for o in outputs)
    # greedy agreement on the tokens both produced (HF ignores EOS here: min_new_tokens)
    same = sum(int(a == b) for o, row in zip(outputs, hf_ids.tolist()) for a, b in zip(o.token_ids, row))
    sync_seconds = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        backend.sync_weights(hf_model.state_dict().items())
        sync_seconds = min(sync_seconds, time.perf_counter() - start)
    report = {
        "batch_size": batch_size,
        "new_tokens": NEW_TOKENS,
        "threads": torch.get_num_threads(),
        "vllm_startup_s": round(backend.startup_seconds, 2),
        "hf_tokens_per_s": round(hf_ids.numel() / hf_seconds, 1),
        "vllm_tokens_per_s": round(vllm_tokens / vllm_seconds, 1),
        "speedup": round((vllm_tokens / vllm_seconds) / (hf_ids.numel() / hf_seconds), 2),
        "greedy_token_agreement": round(same / vllm_tokens, 3),
        "sync_s": round(sync_seconds, 4),
    }
    print("\n" + json.dumps(report))
