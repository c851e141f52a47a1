"""Rollout/trainer mismatch correction: importance weights between the sampling engine and the trainer.

The rollout engine records the log-prob of every sampled token under *its* forward pass (vLLM kernels, bf16,
a KV cache); the trainer recomputes the "old" log-probs with its own pass. Both mean the same distribution,
``log_softmax(logits / T)`` over the full vocabulary (never renormalised over the top-p/top-k set:
``searchr1.rollout.backends.behaviour``), so ρ = 1 with identical weights and kernels, whatever top_p; ρ ≠ 1
measures the engine, not the sampler's truncation. When the two differ, the PPO ratio
``π_θ/π_old`` is measured against a distribution the tokens were not drawn from. The correction multiplies each
token's policy loss by an importance weight built from ``ρ = π_old / π_rollout`` (Yao et al., 2025, "Your
efficient RL framework secretly brings you off-policy RL training"; verl's ``rollout_is``):

* ``tis`` (truncated IS): ``w = min(ρ, C)``;
* ``mis`` (masked IS): ``w = 1`` where ``ρ ∈ [1/C, C]``, else 0 (the token, or the whole sequence, is dropped);
* ``none``: ``w = 1`` (metrics are still computed).

At ``level="sequence"`` ρ is the product of the sequence's token ratios (``exp`` of the summed log-ratios over
valid tokens) and ``w`` is broadcast over the sequence's valid tokens. Departure from verl: masked tokens keep
their place in the loss denominator (they contribute 0 rather than being removed), so the micro-batch
weighting of gradient accumulation stays exact.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from searchr1.algorithms.losses import LOG_RATIO_CLAMP, kl_penalty
from searchr1.algorithms.masked import _masked, masked_mean
from searchr1.registry import Registry

CORRECTION_LEVELS = ("token", "sequence")

ROLLOUT_CORRECTIONS: Registry[Callable[[Tensor, float], Tensor]] = Registry("rollout correction")


@ROLLOUT_CORRECTIONS.register("none")
def _no_correction(ratio: Tensor, threshold: float) -> Tensor:
    return torch.ones_like(ratio)


@ROLLOUT_CORRECTIONS.register("tis", "truncated")
def _truncated(ratio: Tensor, threshold: float) -> Tensor:
    return ratio.clamp(max=threshold)


@ROLLOUT_CORRECTIONS.register("mis", "masked")
def _masked_is(ratio: Tensor, threshold: float) -> Tensor:
    return ((ratio >= 1.0 / threshold) & (ratio <= threshold)).to(ratio.dtype)


def importance_ratio(old_logprob: Tensor, rollout_logprob: Tensor, loss_mask: Tensor, level: str = "token") -> Tensor:
    """``ρ = π_old / π_rollout`` per token, or per sequence broadcast over its tokens.

    Args:
        old_logprob: (B, T) trainer log-probs of the sampled tokens (before the update).
        rollout_logprob: (B, T) log-probs the rollout engine recorded when it sampled them.
        loss_mask: (B, T) 1 on policy-sampled tokens.
        level: ``token`` (one ratio per token) or ``sequence`` (product over the sequence's valid tokens).

    Returns:
        (B, T) ratios, 1 where ``loss_mask`` is 0. Log-ratios are clamped to ±20 (per token, and per sequence
        after summing) so the ratio stays finite.
    """
    if level not in CORRECTION_LEVELS:
        raise ValueError(f"rollout correction level must be one of {CORRECTION_LEVELS}, got {level!r}")
    log_ratio = _masked(old_logprob - rollout_logprob, loss_mask).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # (B, T)
    if level == "sequence":
        per_seq = log_ratio.sum(dim=-1, keepdim=True).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # (B, 1)
        log_ratio = _masked(per_seq.expand_as(log_ratio), loss_mask)
    return torch.exp(log_ratio)


def rollout_correction_weights(
    old_logprob: Tensor,
    rollout_logprob: Tensor,
    loss_mask: Tensor,
    mode: str = "none",
    threshold: float = 2.0,
    level: str = "token",
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token importance weights correcting the rollout/trainer mismatch, and their diagnostics.

    Args:
        old_logprob: (B, T) trainer log-probs before the update (no grad needed; detached here).
        rollout_logprob: (B, T) sampling log-probs recorded by the rollout engine.
        loss_mask: (B, T) 1 on policy-sampled tokens.
        mode: ``none``, ``tis`` or ``mis`` (see the module docstring); unknown names list the valid ones.
        threshold: C > 1: TIS caps ρ at C; MIS keeps ρ in [1/C, C].
        level: ``token`` or ``sequence``.

    Returns:
        ``(weights, metrics)``: weights (B, T), 0 where masked, to multiply each token's policy loss with;
        metrics (scalars, whatever the mode): ``mismatch_kl`` = mean k3 estimate of KL(π_rollout ‖ π_old) over
        valid tokens, ``ratio_mean`` / ``ratio_max`` of ρ over valid tokens (at ``level``), ``truncated_share``
        = share of valid tokens with ρ > C, ``masked_share`` = share of valid tokens with ρ outside [1/C, C].
    """
    if not threshold > 1.0:
        raise ValueError(f"rollout correction threshold C must be > 1, got {threshold}")
    correct = ROLLOUT_CORRECTIONS.get(mode)
    old_logprob, rollout_logprob = old_logprob.detach(), rollout_logprob.detach()
    ratio = importance_ratio(old_logprob, rollout_logprob, loss_mask, level)  # (B, T)
    weights = _masked(correct(ratio, threshold), loss_mask)
    valid = loss_mask.bool()
    outside = (ratio < 1.0 / threshold) | (ratio > threshold)
    metrics = {
        # k3 with samples from the rollout policy: E[ρ - 1 - log ρ] = KL(π_rollout ‖ π_old), >= 0 per token
        "mismatch_kl": masked_mean(kl_penalty(rollout_logprob, old_logprob, "k3"), loss_mask),
        "ratio_mean": masked_mean(ratio, loss_mask),
        "ratio_max": ratio[valid].max() if valid.any() else torch.ones((), dtype=ratio.dtype, device=ratio.device),
        "truncated_share": masked_mean((ratio > threshold).to(ratio.dtype), loss_mask),
        "masked_share": masked_mean(outside.to(ratio.dtype), loss_mask),
    }
    return weights, metrics
