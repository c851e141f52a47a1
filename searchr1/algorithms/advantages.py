"""Advantage estimators: GAE (PPO), GRPO, RLOO and REINFORCE++.

All functions take (B, T) response-token tensors and a ``loss_mask`` (1 only on policy-sampled tokens)
and return zeros where ``loss_mask == 0``. Departure from a naive implementation (and the point of
Search-R1's loss masking): the backward recursions of GAE and REINFORCE++ *pass through* masked
tokens — at a retrieved ``<information>`` token the running value and advantage carry over unchanged —
so inserting a retrieved span between two policy tokens leaves every policy token's advantage as if
the span were not there.

Estimators are also available by name from ``ADVANTAGE_ESTIMATORS`` (see ``compute_advantages``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from searchr1.algorithms.masked import _masked, masked_moments, masked_whiten
from searchr1.registry import Registry

GroupIds = Tensor | Sequence[Hashable]


def gae_advantages(
    token_rewards: Tensor, values: Tensor, loss_mask: Tensor, gamma: float = 1.0, lam: float = 1.0, whiten: bool = True
) -> tuple[Tensor, Tensor]:
    """Generalised Advantage Estimation (Schulman et al., 2016, eq. 16) over valid tokens only.

    For valid t (next valid token t'): ``δ_t = r_t + γ V_{t'} − V_t``, ``A_t = δ_t + γλ A_{t'}``, with
    ``V`` and ``A`` after the last valid token equal to 0. Masked positions are skipped: their reward
    and value are ignored and the running next-value/advantage carry over unchanged.

    Args:
        token_rewards: (B, T) per-token rewards (outcome reward on the last sampled token, KL penalty terms).
        values: (B, T) critic values.
        loss_mask: (B, T) 1 on policy-sampled tokens.
        gamma: discount γ.
        lam: GAE λ.
        whiten: whiten advantages over valid tokens.

    Returns:
        ``(advantages, returns)``, both (B, T); ``returns = raw advantages + values``; 0 where masked.
    """
    mask = loss_mask.to(values.dtype)
    rewards = _masked(token_rewards.to(values.dtype), loss_mask)
    vals = _masked(values, loss_mask)
    next_value = torch.zeros_like(vals[:, 0])  # (B,)
    running = torch.zeros_like(vals[:, 0])  # (B,)
    advantages = torch.zeros_like(vals)
    for t in reversed(range(vals.shape[1])):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - vals[:, t]
        candidate = delta + gamma * lam * running
        running = m * candidate + (1 - m) * running
        next_value = m * vals[:, t] + (1 - m) * next_value
        advantages[:, t] = running
    advantages = _masked(advantages, loss_mask)
    returns = _masked(advantages + vals, loss_mask)
    if whiten:
        advantages = masked_whiten(advantages, loss_mask)
    return advantages, returns


def _group_index(group_ids: GroupIds, device: torch.device) -> tuple[Tensor, int]:
    """Map arbitrary hashable group ids (B,) to contiguous ints (B,) and return the group count."""
    if isinstance(group_ids, Tensor):
        _, index = torch.unique(group_ids.to(device), return_inverse=True)
        return index, int(index.max().item()) + 1 if index.numel() else 0
    lookup: dict[Hashable, int] = {}
    index = torch.tensor([lookup.setdefault(g, len(lookup)) for g in group_ids], dtype=torch.long, device=device)
    return index, len(lookup)


def _group_stats(scores: Tensor, group_ids: GroupIds) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample group size, group mean and unbiased group std, each (B,)."""
    index, num_groups = _group_index(group_ids, scores.device)
    zeros = torch.zeros(num_groups, dtype=scores.dtype, device=scores.device)
    size = zeros.index_add(0, index, torch.ones_like(scores))
    total = zeros.index_add(0, index, scores)
    mean = total / size
    sq = zeros.index_add(0, index, (scores - mean[index]) ** 2)
    std = torch.sqrt(sq / (size - 1).clamp(min=1))
    return size[index], mean[index], std[index]


def _broadcast(per_sample: Tensor, loss_mask: Tensor) -> Tensor:
    """(B,) → (B, T) over valid tokens, 0 elsewhere."""
    return _masked(per_sample[:, None].expand(loss_mask.shape).to(torch.float32), loss_mask)


def grpo_advantages(
    scores: Tensor, group_ids: GroupIds, loss_mask: Tensor, eps: float = 1e-6, scale_by_std: bool = True
) -> Tensor:
    """GRPO outcome advantages (Shao et al., 2024, DeepSeekMath §4.1.2).

    ``A_i = (s_i − mean(group)) / (std(group) + eps)`` with the unbiased group std (no division when
    ``scale_by_std`` is False, as in Dr. GRPO), broadcast over the sequence's valid tokens. A group of
    one sample has no baseline: as in verl, its mean is taken as 0 and its std as 1.

    Args:
        scores: (B,) sequence scores.
        group_ids: (B,) group of each sample (ints, strings, any hashable, or a tensor).
        loss_mask: (B, T) 1 on policy-sampled tokens.
        eps: added to the std.
        scale_by_std: divide by the group std.

    Returns:
        (B, T) advantages, 0 where masked.
    """
    scores = scores.to(torch.float32)
    size, mean, std = _group_stats(scores, group_ids)
    single = size < 2
    mean = torch.where(single, torch.zeros_like(mean), mean)
    std = torch.where(single, torch.ones_like(std), std)
    diff = scores - mean
    # a sample equal to its group mean has advantage 0 even when std + eps == 0 (no 0/0)
    adv = torch.where(diff == 0, torch.zeros_like(diff), diff / (std + eps)) if scale_by_std else diff
    return _broadcast(adv, loss_mask)


def rloo_advantages(scores: Tensor, group_ids: GroupIds, loss_mask: Tensor) -> Tensor:
    """REINFORCE leave-one-out (Ahmadian et al., 2024): ``A_i = s_i − mean_{j≠i, j∈group(i)} s_j``.

    Equals ``n/(n−1)·(s_i − mean(group))``. A group of one sample has no other member: baseline 0.

    Args:
        scores: (B,) sequence scores.
        group_ids: (B,) group of each sample.
        loss_mask: (B, T) 1 on policy-sampled tokens.

    Returns:
        (B, T) advantages, 0 where masked.
    """
    scores = scores.to(torch.float32)
    size, mean, _ = _group_stats(scores, group_ids)
    others_mean = (mean * size - scores) / (size - 1).clamp(min=1)
    adv = torch.where(size < 2, scores, scores - others_mean)
    return _broadcast(adv, loss_mask)


def reinforce_pp_advantages(
    token_rewards: Tensor, loss_mask: Tensor, gamma: float = 1.0, whiten: bool = True
) -> Tensor:
    """REINFORCE++ (Hu, 2025): discounted return-to-go over valid tokens, whitened over the batch.

    ``G_t = r_t + γ G_{t'}`` (t' the next valid token); masked positions are skipped and carry ``G``
    unchanged.

    Args:
        token_rewards: (B, T) per-token rewards.
        loss_mask: (B, T) 1 on policy-sampled tokens.
        gamma: discount γ.
        whiten: whiten the returns over valid tokens.

    Returns:
        (B, T) (whitened) returns, 0 where masked.
    """
    rewards = _masked(token_rewards.to(torch.float32), loss_mask)
    mask = loss_mask.to(rewards.dtype)
    running = torch.zeros_like(rewards[:, 0])
    returns = torch.zeros_like(rewards)
    for t in reversed(range(rewards.shape[1])):
        m = mask[:, t]
        running = m * (rewards[:, t] + gamma * running) + (1 - m) * running
        returns[:, t] = running
    return masked_whiten(returns, loss_mask) if whiten else _masked(returns, loss_mask)


@dataclass
class AdvantageInputs:
    """Everything an estimator may need for one batch.

    Attributes:
        token_rewards: (B, T) rewards per response token (outcome score on the last sampled token,
            minus the KL penalty when KL is in the reward).
        scores: (B,) outcome score of each sequence.
        loss_mask: (B, T) 1 on policy-sampled tokens.
        group_ids: (B,) prompt group of each sample (GRPO/RLOO).
        values: (B, T) critic values (GAE only).
        gamma: discount.
        lam: GAE λ.
        reduce_moments: sums whitening moments (3,) over the ranks that hold the other shards of the batch (an
            all-reduce, run once per call by every rank), so GAE and REINFORCE++ whiten over the global batch as verl
            and Search-R1 do; None: over this batch.
    """

    token_rewards: Tensor
    scores: Tensor
    loss_mask: Tensor
    group_ids: GroupIds | None = None
    values: Tensor | None = None
    gamma: float = 1.0
    lam: float = 1.0
    reduce_moments: Callable[[Tensor], Tensor] | None = None

    def whiten(self, x: Tensor) -> Tensor:
        """Whiten (B, T) ``x`` over the valid tokens of the global batch (see ``reduce_moments``)."""
        if self.reduce_moments is None:
            return masked_whiten(x, self.loss_mask)
        return masked_whiten(x, self.loss_mask, moments=self.reduce_moments(masked_moments(x, self.loss_mask)))


@dataclass(frozen=True)
class AdvantageEstimator:
    """A registered estimator: ``fn(inputs) -> (advantages, returns or None)`` and whether it needs a critic."""

    fn: Callable[[AdvantageInputs], tuple[Tensor, Tensor | None]]
    needs_critic: bool


ADVANTAGE_ESTIMATORS: Registry[AdvantageEstimator] = Registry("advantage estimator")


def _require(value: object, what: str, name: str) -> None:
    if value is None:
        raise ValueError(f"advantage estimator {name!r} needs {what}, which was not given")


def _gae(x: AdvantageInputs) -> tuple[Tensor, Tensor | None]:
    _require(x.values, "critic values", "gae")
    advantages, returns = gae_advantages(x.token_rewards, x.values, x.loss_mask, x.gamma, x.lam, whiten=False)
    return x.whiten(advantages), returns


def _grpo(x: AdvantageInputs) -> tuple[Tensor, Tensor | None]:
    _require(x.group_ids, "group ids", "grpo")
    return grpo_advantages(x.scores, x.group_ids, x.loss_mask), None


def _rloo(x: AdvantageInputs) -> tuple[Tensor, Tensor | None]:
    _require(x.group_ids, "group ids", "rloo")
    return rloo_advantages(x.scores, x.group_ids, x.loss_mask), None


def _reinforce_pp(x: AdvantageInputs) -> tuple[Tensor, Tensor | None]:
    return x.whiten(reinforce_pp_advantages(x.token_rewards, x.loss_mask, x.gamma, whiten=False)), None


ADVANTAGE_ESTIMATORS.register("gae", "ppo")(AdvantageEstimator(_gae, needs_critic=True))
ADVANTAGE_ESTIMATORS.register("grpo")(AdvantageEstimator(_grpo, needs_critic=False))
ADVANTAGE_ESTIMATORS.register("rloo")(AdvantageEstimator(_rloo, needs_critic=False))
ADVANTAGE_ESTIMATORS.register("reinforce_pp", "reinforce_plus_plus")(AdvantageEstimator(_reinforce_pp, False))


def compute_advantages(name: str, inputs: AdvantageInputs) -> tuple[Tensor, Tensor | None]:
    """Run the estimator registered as ``name``; returns ``(advantages, returns)`` (returns only for GAE)."""
    return ADVANTAGE_ESTIMATORS.get(name).fn(inputs)
