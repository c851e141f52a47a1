"""Applies ``AlgorithmConfig.rollout_correction`` to one micro-batch of the policy update (the math lives in
``searchr1.algorithms.correction``).

The weights multiply the advantages: for a weight ``w >= 0`` the PPO per-token loss ``max(−A·r, −A·clip(r))``
(and its dual clip, and the vanilla ``−A·r``) scaled by ``w`` equals the loss computed with advantage ``w·A``, so
the policy losses need no new argument.
"""

from __future__ import annotations

from collections import defaultdict

from torch import Tensor

from searchr1.algorithms.correction import rollout_correction_weights
from searchr1.training.batch import UpdateBatch
from searchr1.training.config import AlgorithmConfig

PREFIX = "rollout_correction/"


def corrected_advantages(
    cfg: AlgorithmConfig, mb: UpdateBatch, old_logprobs: Tensor, stats: defaultdict[str, list[float]]
) -> Tensor:
    """``mb.advantages`` (B, R) times the correction weights of ``old_logprobs`` (B, R) vs the rollout's.

    Appends the correction metrics to ``stats`` under ``rollout_correction/``; ``ratio_max`` is kept as a
    one-element list holding the running maximum (the updater averages every list, so it reports the max over
    micro-batches). Batches without recorded rollout log-probs pass through unchanged.
    """
    if mb.rollout_logprobs is None:
        return mb.advantages
    weights, metrics = rollout_correction_weights(
        old_logprobs,
        mb.rollout_logprobs,
        mb.loss_mask,
        cfg.rollout_correction,
        cfg.rollout_correction_threshold,
        cfg.rollout_correction_level,
    )
    for name, value in metrics.items():
        key = PREFIX + name
        if name.endswith("_max"):
            stats[key] = [max([*stats[key], value.item()])]
        else:
            stats[key].append(value.item())
    return mb.advantages * weights
