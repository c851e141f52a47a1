"""``training/steps.py``: scoring, the reward on the last sampled token, KL folded into the rewards, StepOutput —
with hand-computed numbers; and the row operations ``RolloutBatch`` and ``UpdateBatch`` share."""

from __future__ import annotations

import pytest
import torch

from searchr1.rollout import RolloutBatch, Trajectory
from searchr1.training.batch import UpdateBatch
from searchr1.training.steps import StepOutput, build_update_batch, last_token_rewards, score_rollout


def _rollout() -> RolloutBatch:
    """Two samples of one prompt: row 0 samples 2 tokens then gets a 1-token observation; row 1 samples 1 token."""
    a = Trajectory(prompt_ids=[5, 6], group_id=0, prompt_index=0)
    a.append([7, 8], "policy", [-1.0, -1.0])
    a.append([9], "observation")
    b = Trajectory(prompt_ids=[5], group_id=0, prompt_index=0)
    b.append([7], "policy", [-2.0])
    return RolloutBatch.from_trajectories([a, b], pad_token_id=0)


def test_score_on_the_last_sampled_token_not_the_last_response_token():
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    rewards = last_token_rewards(torch.tensor([2.0, 3.0, 4.0]), mask)
    # row 0: last sampled token at 1 (position 2 is an observation); row 1 at 0; row 2 has none: no reward
    assert rewards.tolist() == [[0.0, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 0.0]]


def test_score_rollout_calls_the_reward_per_trajectory_and_stops_on_nan():
    rollout = _rollout()
    seen = []

    def reward(traj, golds):
        seen.append((traj.response_ids, golds))
        return len(traj.response_ids)

    assert score_rollout(rollout, [["x"]], reward).tolist() == [3.0, 1.0]
    assert seen == [([7, 8, 9], ["x"]), ([7], ["x"])]
    with pytest.raises(FloatingPointError, match=r"reward nan_reward returned nan at rollout step 4 for sample 0"):

        def nan_reward(traj, golds):
            return float("nan")

        score_rollout(rollout, [["x"]], nan_reward, step=4)


def test_kl_folded_into_the_rewards_reaches_a_group_estimator():
    rollout = _rollout()
    assert rollout.prompt_length == 2 and rollout.loss_mask.tolist() == [[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    old = torch.tensor([[-1.0, -1.0, 0.0], [-2.0, 0.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, 0.0], [-1.0, 0.0, 0.0]])
    batch, token_rewards = build_update_batch(
        rollout, torch.tensor([1.0, 0.0]), "rloo", old_logprobs=old, ref_logprobs=ref, values=None,
        kl_coef=0.1, kl_kind="k1", kl_in_reward=True, gamma=1.0, lam=1.0,
    )  # fmt: skip
    # k1 = old - ref = [[0.5, 0, 0], [-1, 0, 0]]; rewards = score on the last sampled token - 0.1 * k1
    torch.testing.assert_close(token_rewards, torch.tensor([[-0.05, 1.0, 0.0], [0.1, 0.0, 0.0]]))
    # RLOO on the sequence sums 0.95 and 0.1 (group of two): 0.95 - 0.1 = 0.85 and -0.85, on the sampled tokens
    torch.testing.assert_close(batch.advantages, torch.tensor([[0.85, 0.85, 0.0], [-0.85, 0.0, 0.0]]))
    assert batch.ref_logprobs is None and batch.returns is None  # KL went to the reward, not the loss
    assert torch.equal(batch.rollout_logprobs, rollout.rollout_logprobs)


def test_kl_as_a_loss_keeps_the_reference_and_the_raw_scores():
    rollout = _rollout()
    ref = torch.zeros(2, 3)
    batch, token_rewards = build_update_batch(
        rollout, torch.tensor([1.0, 0.0]), "grpo", old_logprobs=None, ref_logprobs=ref, values=None,
        kl_coef=0.1, kl_kind="k1", kl_in_reward=False, gamma=1.0, lam=1.0,
    )  # fmt: skip
    assert token_rewards.tolist() == [[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    assert batch.ref_logprobs is ref
    # GRPO: (s - mean) / (std + eps), std unbiased: scores 1, 0 → mean 0.5, std 0.7071 → ±0.7071
    assert batch.advantages[0, 0].item() == pytest.approx(0.5 / 0.5**0.5, rel=1e-5)
    assert batch.advantages[1, 0].item() == pytest.approx(-0.5 / 0.5**0.5, rel=1e-5)


def test_step_output_is_typed_and_a_mapping_for_lightning():
    rollout, scores = _rollout(), torch.tensor([1.0, 0.0])
    out = StepOutput(rollout, scores)
    assert out.rollout is rollout and out["scores"] is scores and dict(out) == {"rollout": rollout, "scores": scores}
    assert "loss" not in out and out.copy() is out  # what Lightning's manual-optimization loop does with it
    with pytest.raises(KeyError):
        out["loss"]


def test_update_batch_selects_and_splits_rows_like_a_rollout():
    rollout = _rollout()
    batch = UpdateBatch(
        input_ids=rollout.input_ids, attention_mask=rollout.attention_mask, position_ids=rollout.position_ids,
        loss_mask=rollout.loss_mask, advantages=torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]]),
    )  # fmt: skip
    assert len(batch) == 2 and batch.prompt_length == rollout.prompt_length == 2
    second = batch.select([1])
    assert second.advantages.tolist() == [[3.0, 0.0, 0.0]] and second.old_logprobs is None
    assert [len(p) for p in batch.split(1)] == [1, 1] and [len(p) for p in rollout.split(1)] == [1, 1]
    assert rollout.select([1]).trajectories == [rollout.trajectories[1]]
    assert batch.to("cpu").advantages.tolist() == batch.advantages.tolist()
    with pytest.raises(ValueError, match="micro_batch_size must be positive"):
        batch.split(0)
