"""What a backend's behaviour log-prob means, and whether vLLM can record it for given sampling settings.

The behaviour log-prob of a sampled token is ``log_softmax(logits / T)[token]`` over the full vocabulary: what the
trainer recomputes as π_old (``searchr1.training.forward.response_logprobs`` divides by the rollout temperature)
and what :func:`~searchr1.rollout.backends.decoding.sample_next` records. It is *not* renormalised over the
top-k / top-p set: top-p is part of how the rollout explores, not a different policy, so the mismatch metric and
TIS/MIS (``searchr1.algorithms.correction``) see only real engine mismatch (precision, kernels, stale weights).
verl records vLLM's ``processed_logprobs`` (after top-k/top-p) since its rollout config grew ``logprobs_mode``;
with top_p < 1 its ``rollout_corr`` ratio then includes the nucleus mass (docs/collapse.md compares the two).
"""

from __future__ import annotations

import inspect
from typing import Any

from searchr1.rollout.backends.base import SamplingParams


def behaviour_logprob_problem(logprobs_mode: str, params: SamplingParams) -> str | None:
    """Why vLLM in ``logprobs_mode`` cannot record the behaviour log-prob of ``params``' samples (None: it can).

    The behaviour log-prob is ``log_softmax(logits / T)`` of the sampled token over the full vocabulary, what the
    trainer recomputes as π_old. vLLM's ``raw_logprobs`` are ``log_softmax(logits)`` (no temperature) and its
    ``processed_logprobs`` are taken after temperature *and* top-k/top-p (renormalised over the kept tokens, so
    larger); greedy decoding records ``log_softmax(logits)`` in both modes.
    """
    if not params.do_sample:
        return None
    filtered = params.top_p < 1.0 or params.top_k > 0
    if logprobs_mode == "raw_logprobs" and params.temperature != 1.0:
        fix = (
            "sample at temperature 1 (top_p/top_k may stay)"
            if filtered
            else "set logprobs_mode='processed_logprobs' (a VLLMBackend argument: model.backend_kwargs in a config; "
            "exact without top-p/top-k) or temperature 1"
        )
        return (
            f"vLLM's raw_logprobs ignore temperature, so at temperature {params.temperature} they are not the "
            f"behaviour log-probs log_softmax(logits / T) the trainer compares them with (rollout/mismatch_kl, "
            f"TIS/MIS); {fix}"
        )
    if logprobs_mode == "processed_logprobs" and filtered:
        return (
            f"vLLM's processed_logprobs are renormalised over the top-p/top-k set (top_p={params.top_p}, "
            f"top_k={params.top_k}), not the full-vocabulary log_softmax(logits / T) the trainer recomputes: "
            "rollout/mismatch_kl would measure the nucleus and TIS/MIS would shrink or drop tokens with no engine "
            "mismatch. Use logprobs_mode='raw_logprobs' (VLLMBackend's default; exact at temperature 1) or top_p 1 "
            "and top_k 0"
        )
    return None


def configured_logprob_problem(
    backend_cls: type, backend_kwargs: dict[str, Any], sampling: SamplingParams
) -> str | None:
    """:func:`behaviour_logprob_problem` of a backend class built with ``backend_kwargs`` (its ``logprobs_mode``, or
    that argument's default) sampling with ``sampling``; None for a backend without a ``logprobs_mode`` (HF)."""
    param = inspect.signature(backend_cls.__init__).parameters.get("logprobs_mode")
    if param is None:
        return None
    return behaviour_logprob_problem(backend_kwargs.get("logprobs_mode", param.default), sampling)
