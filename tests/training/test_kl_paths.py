"""KL in the reward reaches the group estimators (verl: a group score is the sum of the token rewards)."""

from __future__ import annotations

import pytest
import torch

from searchr1.rollout import RolloutBatch, Trajectory
from searchr1.training.config import AlgorithmConfig
from searchr1.training.steps import build_update_batch


def _rollout() -> RolloutBatch:
    """One GRPO group of two samples, each: 2 sampled tokens, 1 observation token, 1 sampled token."""
    trajs = []
    for _ in range(2):
        t = Trajectory(prompt_ids=[5, 6], group_id=0)
        t.append([7, 8], "policy", [-1.0, -1.0])
        t.append([9], "observation")
        t.append([10], "policy", [-1.0])
        trajs.append(t)
    return RolloutBatch.from_trajectories(trajs, pad_token_id=0)


# k1 KL = old - ref per sampled token; sample 0 drifted by 0.5 on its first token, sample 1 not at all
OLD = torch.tensor([[-1.0, -1.0, 0.0, -1.0], [-1.0, -1.0, 0.0, -1.0]])
REF = torch.tensor([[-1.5, -1.0, 0.0, -1.0], [-1.0, -1.0, 0.0, -1.0]])
BETA = 0.1


def _build(estimator: str, kl_in_reward: bool):
    rollout = _rollout()
    mask = rollout.loss_mask
    return build_update_batch(
        rollout,
        torch.tensor([1.0, 1.0]),  # both samples answered correctly
        estimator,
        old_logprobs=OLD * mask,
        ref_logprobs=REF * mask,
        values=None,
        kl_coef=BETA,
        kl_kind="k1",
        kl_in_reward=kl_in_reward,
        gamma=1.0,
        lam=1.0,
    )


def test_grpo_with_kl_in_reward_uses_summed_token_rewards() -> None:
    batch, token_rewards = _build("grpo", kl_in_reward=True)
    # token rewards: sample 0 = [-0.05, 0, (obs) 0, 1.0] -> sum 0.95; sample 1 = [0, 0, 0, 1.0] -> sum 1.0
    assert token_rewards.sum(-1).tolist() == pytest.approx([0.95, 1.0])
    # group mean 0.975, unbiased std sqrt(2 * 0.025**2 / 1) = 0.0353553 -> advantages -/+ 0.70711
    expected = torch.tensor([-0.70711, 0.70711])[:, None] * batch.loss_mask
    torch.testing.assert_close(batch.advantages, expected, atol=1e-4, rtol=0)
    assert batch.ref_logprobs is None  # the KL went into the reward, not into the loss


def test_rloo_with_kl_in_reward_uses_summed_token_rewards() -> None:
    batch, _ = _build("rloo", kl_in_reward=True)
    # leave-one-out baseline: 0.95 - 1.0 = -0.05 and 1.0 - 0.95 = +0.05
    torch.testing.assert_close(batch.advantages, torch.tensor([-0.05, 0.05])[:, None] * batch.loss_mask)


def test_kl_in_loss_keeps_raw_scores_and_hands_reference_to_the_loss() -> None:
    batch, token_rewards = _build("grpo", kl_in_reward=False)
    assert token_rewards.sum(-1).tolist() == [1.0, 1.0]
    assert torch.count_nonzero(batch.advantages) == 0  # equal scores, no baseline difference
    assert batch.ref_logprobs is not None


def test_kl_path_names_the_active_path() -> None:
    assert AlgorithmConfig(kl_in_reward=True).kl_path == "reward"
    assert AlgorithmConfig(kl_in_reward=False).kl_path == "loss"
    assert AlgorithmConfig(kl_coef=0.0, kl_in_reward=True).kl_path == "off"
