"""Pieces of one RL step that need no Trainer: scoring and advantages (the no-grad passes: ``forward``).

The LightningModule strings these together (``SearchR1Module.training_step``); keeping them here keeps
each testable on its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from searchr1.algorithms import AdvantageInputs, compute_advantages, kl_penalty
from searchr1.distributed import Lockstep
from searchr1.rewards import RewardFn
from searchr1.rollout import RolloutBatch
from searchr1.training.batch import UpdateBatch


@dataclass(frozen=True)
class StepOutput(Mapping):
    """What ``SearchR1Module.training_step`` returns; callbacks get it as ``outputs`` in ``on_train_batch_end``.

    A ``Mapping`` as well (``outputs["rollout"]``) because Lightning's manual optimization accepts only a tensor, a
    mapping or None from ``training_step``; read the attributes.

    Attributes:
        rollout: the step's training rollout.
        scores: (B,) outcome score of each trajectory.
    """

    rollout: RolloutBatch
    scores: Tensor

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def _keys(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self))

    def copy(self) -> StepOutput:
        """Itself (frozen); Lightning copies the mapping a training step returns."""
        return self


def score_rollout(
    rollout: RolloutBatch,
    golden_answers: Sequence[Sequence[str]],
    reward_fn: RewardFn,
    step: int | None = None,
    lockstep: Lockstep | None = None,
) -> Tensor:
    """Outcome score of every trajectory: ``reward_fn(trajectory, golden answers of its prompt)`` → (B,).

    A non-finite score stops the run with a message naming the reward, the sample and the rollout ``step``; with an
    active ``lockstep`` the ranks agree first, so all of them stop with that message.
    """
    scores = [
        float(reward_fn(traj, golden_answers[int(i)]))
        for traj, i in zip(rollout.trajectories, rollout.prompt_index.tolist())
    ]
    message = None
    for row, score in enumerate(scores):
        if not math.isfinite(score):
            name = getattr(reward_fn, "__name__", type(reward_fn).__name__)
            golds = list(golden_answers[int(rollout.prompt_index[row])])
            message = (
                f"reward {name} returned {score} at rollout step {step} for sample {row} (golden answers {golds}); "
                "rewards must be finite numbers"
            )
            break
    if lockstep is not None:
        lockstep.raise_together(message)
    elif message is not None:
        raise FloatingPointError(message)
    return torch.tensor(scores, dtype=torch.float32, device=rollout.loss_mask.device)


def last_token_rewards(scores: Tensor, loss_mask: Tensor) -> Tensor:
    """Put each sequence's score on its last policy-sampled token: (B,), (B, R) → (B, R).

    (Search-R1 puts it on the last response token; the last *sampled* one is the same except when a
    trajectory is cut inside an observation, where a masked position would drop the reward.)
    """
    positions = torch.arange(loss_mask.shape[1], device=loss_mask.device).expand_as(loss_mask)
    last = torch.where(loss_mask.bool(), positions, -1).max(dim=1).values  # (B,)
    rewards = torch.zeros(loss_mask.shape, dtype=torch.float32, device=loss_mask.device)
    has = last >= 0
    rewards[has.nonzero().squeeze(-1), last[has]] = scores[has].float()
    return rewards


def build_update_batch(
    rollout: RolloutBatch,
    scores: Tensor,
    estimator: str,
    *,
    old_logprobs: Tensor | None,
    ref_logprobs: Tensor | None,
    values: Tensor | None,
    kl_coef: float,
    kl_kind: str,
    kl_in_reward: bool,
    gamma: float,
    lam: float,
    lockstep: Lockstep | None = None,
    proximal_is_current: Tensor | None = None,
) -> tuple[UpdateBatch, Tensor]:
    """Token rewards (score on the last sampled token, minus β·KL when KL is in the reward) → advantages.

    With KL in the reward every estimator sees it: GAE and REINFORCE++ through the token rewards, GRPO and RLOO
    through the sequence score ``token_rewards.sum(-1)``; otherwise the reference log-probs go to the loss.

    With several data-parallel ranks (``lockstep``), GAE and REINFORCE++ whiten over the global batch: the ranks sum
    their whitening moments in one all-reduce per call (the estimator is the same on every rank, so it stays lockstep).

    ``proximal_is_current`` (B,) marks the rows whose old log-probs the update takes from its own forward (the old
    pass skipped them, ``old_logprobs`` is 0 there); KL in the reward needs every row's, so it must be None then.

    Returns:
        ``(update_batch, token_rewards)``; token_rewards is (B, R).
    """
    mask = rollout.loss_mask
    token_rewards = last_token_rewards(scores, mask)
    kl_folded = kl_in_reward and kl_coef > 0
    if kl_folded:
        if old_logprobs is None or ref_logprobs is None or proximal_is_current is not None:
            raise ValueError("KL in the reward needs old (of every row) and reference log-probs")
        token_rewards = token_rewards - kl_coef * kl_penalty(old_logprobs, ref_logprobs, kl_kind) * mask
    inputs = AdvantageInputs(
        token_rewards=token_rewards,
        # verl: group estimators (GRPO, RLOO) score a sequence by the sum of its token rewards, so a KL folded into
        # the rewards reaches them too (the raw scores would drop it, and no KL goes to the loss on this path)
        scores=token_rewards.sum(dim=-1) if kl_folded else scores,
        loss_mask=mask,
        group_ids=rollout.group_ids,
        values=values,
        gamma=gamma,
        lam=lam,
        reduce_moments=lockstep.sum if lockstep is not None else None,
    )
    advantages, returns = compute_advantages(estimator, inputs)
    batch = UpdateBatch(
        input_ids=rollout.input_ids,
        attention_mask=rollout.attention_mask,
        position_ids=rollout.position_ids,
        loss_mask=mask,
        advantages=advantages,
        old_logprobs=old_logprobs,
        ref_logprobs=None if kl_in_reward else ref_logprobs,
        returns=returns,
        old_values=values,
        rollout_logprobs=rollout.rollout_logprobs,
        proximal_is_current=proximal_is_current,
    )
    return batch, token_rewards
