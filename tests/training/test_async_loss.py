"""Decoupled PPO (AReaL, Fu et al. 2025, eq. 5) as the update computes it for asynchronous rollouts, checked against
numbers worked out by hand: per token ``w · max(−A·r, −A·clip(r, 1−ε, 1+ε))`` with the proximal policy
``π_prox`` = the trainer's weights before the update (``old_logprobs``), ``r = π_θ / π_prox`` and the behaviour
weight ``w = min(π_prox / π_behav, C)`` from the log-probs the rollout server recorded (TIS)."""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
import torch

from searchr1.algorithms import ppo_policy_loss
from searchr1.training.batch import UpdateBatch
from searchr1.training.config import AlgorithmConfig
from searchr1.training.rollout_correction import corrected_advantages


def test_decoupled_ppo_loss_matches_the_hand_computed_value():
    behaviour = torch.tensor([[-1.0, -2.0, 0.0]])  # server log-probs (versions older than the trainer's)
    proximal = torch.tensor([[-0.5, -0.5, 0.0]])  # trainer's weights at the start of the update
    current = torch.tensor([[-0.4, -0.2, 0.0]])  # π_θ during the update
    advantages = torch.tensor([[1.0, -1.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the third token is an observation: never in the loss
    # token 1: w = e^{0.5} = 1.648721 (< C = 2); r = e^{0.1} = 1.105171 inside [0.8, 1.2]; L = −1·w·r = −1.822119
    # token 2: w = min(e^{1.5}, 2) = 2; r = e^{0.3} = 1.349859; A < 0: max(1.349859, 1.2) = 1.349859; L = 2.699718
    # token-mean over the 2 policy tokens: (−1.822119 + 2.699718) / 2 = 0.438800
    hand = (-math.exp(0.5) * math.exp(0.1) + 2 * math.exp(0.3)) / 2
    assert hand == pytest.approx(0.438800, abs=1e-6)

    cfg = AlgorithmConfig(rollout_correction="tis", rollout_correction_threshold=2.0)
    mb = _update_batch(mask, advantages, proximal, behaviour)
    stats = defaultdict(list)
    weighted = corrected_advantages(cfg, mb, proximal, stats)  # what PolicyCriticUpdater._policy_loss does
    loss, _ = ppo_policy_loss(current, proximal, weighted, mask, clip_low=0.2, clip_high=0.2)
    assert float(loss) == pytest.approx(hand, abs=1e-5)
    assert stats["rollout_correction/truncated_share"] == [pytest.approx(0.5)]  # token 2's weight was capped


def test_one_update_needs_no_proximal_pass_and_weighs_by_the_behaviour_logprobs():
    """With a single update the proximal policy is the current one (r = 1): the loss is −mean(w·A) with
    w = min(π_θ/π_behav, C), so tokens sampled by older versions get their own weights."""
    behaviour = torch.tensor([[-1.2, -0.3]])
    current = torch.tensor([[-1.0, -0.3]])
    mask = torch.ones((1, 2))
    advantages = torch.tensor([[1.0, 1.0]])
    cfg = AlgorithmConfig(rollout_correction="tis", rollout_correction_threshold=2.0)
    mb = _update_batch(mask, advantages, None, behaviour)
    stats = defaultdict(list)
    weighted = corrected_advantages(cfg, mb, current, stats)
    loss, _ = ppo_policy_loss(current, current, weighted, mask)
    assert float(loss) == pytest.approx(-(math.exp(0.2) + 1.0) / 2, abs=1e-6)


def _update_batch(
    mask: torch.Tensor, advantages: torch.Tensor, old: torch.Tensor | None, behaviour: torch.Tensor
) -> UpdateBatch:
    """A one-row update batch over ``mask``'s ``T`` response tokens (one prompt token before them)."""
    ids = torch.zeros((1, mask.shape[1] + 1), dtype=torch.long)
    return UpdateBatch(
        input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=torch.arange(ids.shape[1])[None],
        loss_mask=mask, advantages=advantages, old_logprobs=old, ref_logprobs=None, returns=advantages,
        old_values=None, rollout_logprobs=behaviour,
    )  # fmt: skip
