"""Policy, value and KL losses over (B, T) response tokens.

Policy tokens are those with ``loss_mask == 1``; every per-token quantity is aggregated only over
them (``aggregate_loss``), so retrieved ``<information>`` tokens never receive gradient — Search-R1's
retrieved-token loss masking (Jin et al., 2025, §3.1).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from searchr1.algorithms.masked import aggregate_loss, masked_mean
from searchr1.registry import Registry

LOG_RATIO_CLAMP = 20.0

KL_ESTIMATORS: Registry[Callable[[Tensor, Tensor], Tensor]] = Registry("KL penalty kind")


@KL_ESTIMATORS.register("k1", "kl")
def _kl_k1(logprob: Tensor, ref_logprob: Tensor) -> Tensor:
    return logprob - ref_logprob


@KL_ESTIMATORS.register("abs")
def _kl_abs(logprob: Tensor, ref_logprob: Tensor) -> Tensor:
    return (logprob - ref_logprob).abs()


@KL_ESTIMATORS.register("k2", "mse")
def _kl_k2(logprob: Tensor, ref_logprob: Tensor) -> Tensor:
    return 0.5 * (logprob - ref_logprob).square()


@KL_ESTIMATORS.register("k3", "low_var_kl")
def _kl_k3(logprob: Tensor, ref_logprob: Tensor) -> Tensor:
    log_ratio = (ref_logprob - logprob).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return (torch.exp(log_ratio) - log_ratio - 1).clamp(-10.0, 10.0)


def kl_penalty(logprob: Tensor, ref_logprob: Tensor, kind: str = "k1") -> Tensor:
    """Per-token KL estimate between the policy and the reference (Schulman, "Approximating KL", 2020).

    Kinds: ``k1``/``kl`` = lp − ref; ``abs`` = |lp − ref|; ``k2``/``mse`` = ½(lp − ref)²;
    ``k3``/``low_var_kl`` = exp(ref − lp) − (ref − lp) − 1 with ref − lp clamped to ±20 and the result
    to ±10 (non-negative, low variance; used as a loss by GRPO).

    Args:
        logprob: (B, T) policy log-probs of the sampled tokens.
        ref_logprob: (B, T) reference log-probs of the same tokens.
        kind: estimator name; an unknown kind lists the valid ones.

    Returns:
        (B, T) per-token KL estimates (unmasked; aggregate with the loss mask).
    """
    return KL_ESTIMATORS.get(kind)(logprob, ref_logprob)


def ppo_policy_loss(
    logprob: Tensor,
    old_logprob: Tensor,
    advantages: Tensor,
    loss_mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    agg: str = "token-mean",
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate (Schulman et al., 2017, eq. 7), with clip-higher and dual clip.

    ``r = exp(clamp(lp − old, ±20))``; per token ``L = max(−A·r, −A·clip(r, 1−clip_low, 1+clip_high))``;
    with ``dual_clip = c > 1`` (Ye et al., 2020) tokens with A < 0 use ``min(L, −A·c)``.

    Args:
        logprob: (B, T) current policy log-probs of the sampled tokens.
        old_logprob: (B, T) log-probs under the policy that generated the batch.
        advantages: (B, T) advantages.
        loss_mask: (B, T) 1 on policy-sampled tokens.
        clip_low: ε below 1.
        clip_high: ε above 1 (DAPO's clip-higher when larger than ``clip_low``).
        dual_clip: dual-clip constant c (> 1) or None.
        agg: aggregation mode (see ``aggregate_loss``).

    Returns:
        ``(loss, metrics)`` with metrics ``clipfrac`` (share of valid tokens where the clipped term was
        used), ``approx_kl`` (mean of old − lp), ``ratio_mean`` and ``clipfrac_dual``.
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (got {dual_clip}); use None to disable it")
    log_ratio = (logprob - old_logprob).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # (B, T)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    losses = torch.maximum(unclipped, clipped)
    clipfrac = masked_mean((clipped > unclipped).to(logprob.dtype), loss_mask)
    clipfrac_dual = torch.zeros_like(clipfrac)
    if dual_clip is not None:
        lower = -advantages * dual_clip
        use_dual = (advantages < 0) & (lower < losses)
        clipfrac_dual = masked_mean(use_dual.to(logprob.dtype), loss_mask)
        losses = torch.where(advantages < 0, torch.minimum(losses, lower), losses)
    loss = aggregate_loss(losses, loss_mask, agg)
    metrics = {
        "clipfrac": clipfrac.detach(),
        "clipfrac_dual": clipfrac_dual.detach(),
        "approx_kl": masked_mean(-log_ratio, loss_mask).detach(),
        "ratio_mean": masked_mean(ratio, loss_mask).detach(),
    }
    return loss, metrics


def vanilla_policy_loss(
    logprob: Tensor,
    old_logprob: Tensor,
    advantages: Tensor,
    loss_mask: Tensor,
    agg: str = "token-mean",
    **_: object,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Unclipped importance-weighted policy gradient: per token ``−A·exp(lp − old)``.

    On-policy (lp == old) its gradient is the REINFORCE gradient ``−A·∇lp``. Metrics as in ``ppo_policy_loss``.
    """
    log_ratio = (logprob - old_logprob).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    loss = aggregate_loss(-advantages * ratio, loss_mask, agg)
    zero = torch.zeros((), dtype=logprob.dtype, device=logprob.device)
    metrics = {
        "clipfrac": zero,
        "clipfrac_dual": zero,
        "approx_kl": masked_mean(-log_ratio, loss_mask).detach(),
        "ratio_mean": masked_mean(ratio, loss_mask).detach(),
    }
    return loss, metrics


POLICY_LOSSES: Registry[Callable[..., tuple[Tensor, dict[str, Tensor]]]] = Registry("policy loss")
POLICY_LOSSES.register("ppo", "clip")(ppo_policy_loss)
POLICY_LOSSES.register("vanilla", "reinforce")(vanilla_policy_loss)


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    loss_mask: Tensor,
    clip: float = 0.5,
    agg: str = "token-mean",
) -> tuple[Tensor, Tensor]:
    """Clipped value loss (PPO2 / verl): ``½·agg(max((V − R)², (V_clip − R)²))``.

    ``V_clip = V_old + clamp(V − V_old, −clip, clip)``.

    Args:
        values: (B, T) current critic values.
        old_values: (B, T) values when the batch was made.
        returns: (B, T) GAE returns.
        loss_mask: (B, T) 1 on policy-sampled tokens.
        clip: value clip range.
        agg: aggregation mode.

    Returns:
        ``(loss, clipfrac)``: the scalar loss (with the ½) and the share of valid tokens where the clipped
        branch was larger.
    """
    clipped_values = old_values + (values - old_values).clamp(-clip, clip)
    unclipped = (values - returns).square()
    clipped = (clipped_values - returns).square()
    loss = 0.5 * aggregate_loss(torch.maximum(unclipped, clipped), loss_mask, agg)
    clipfrac = masked_mean((clipped > unclipped).to(values.dtype), loss_mask).detach()
    return loss, clipfrac


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the categorical distribution per position: (..., V) → (...)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)
